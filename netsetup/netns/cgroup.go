package netns

import (
	"slices"
	"strings"
)

// cgroupHasPod reports whether content, the text of a /proc/<pid>/cgroup file, places the process in
// a cgroup of the pod whose UID is uid, in any hierarchy (cgroup v1 lines "3:pids:/path", the v2
// line "0::/path").
func cgroupHasPod(content, uid string) bool {
	want := normalizeUID(uid)
	for line := range strings.Lines(content) {
		path, ok := cgroupLinePath(strings.TrimRight(line, "\n"))
		if ok && cgroupPathHasPod(path, want) {
			return true
		}
	}
	return false
}

// cgroupLinePath returns the path of one /proc/<pid>/cgroup line "hierarchy-ID:controllers:path".
// The path may contain colons.
func cgroupLinePath(line string) (string, bool) {
	_, rest, ok := strings.Cut(line, ":")
	if !ok {
		return "", false
	}
	_, path, ok := strings.Cut(rest, ":")
	if !ok || !strings.HasPrefix(path, "/") {
		return "", false
	}
	return path, true
}

// cgroupPathHasPod reports whether a segment of the cgroup path names the pod whose normalized UID
// is want. The path may be absolute ("/kubepods/besteffort/pod<uid>/<ctr>") or relative to the
// reader's cgroup namespace ("/../../kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope"):
// no ancestor is required, the pod segment itself is matched.
func cgroupPathHasPod(path, want string) bool {
	path = strings.TrimSuffix(path, " (deleted)")
	for seg := range strings.SplitSeq(path, "/") {
		if uid, ok := segmentPodUID(seg); ok && normalizeUID(uid) == want {
			return true
		}
	}
	return false
}

// segmentPodUID returns the pod UID one cgroup path segment names, as written there:
//
//	pod<uid>                       cgroupfs driver: kubepods/pod<uid>, kubepods/burstable/pod<uid>
//	<prefix>-pod<uid_>.slice       systemd driver: kubepods-pod<uid_>.slice,
//	                               kubepods-besteffort-pod<uid_>.slice (hyphens become underscores)
func segmentPodUID(seg string) (string, bool) {
	if s, ok := strings.CutSuffix(seg, ".slice"); ok {
		i := strings.LastIndex(s, "-pod")
		if i < 0 || i+len("-pod") == len(s) {
			return "", false
		}
		return s[i+len("-pod"):], true
	}
	if s, ok := strings.CutPrefix(seg, "pod"); ok && s != "" {
		return s, true
	}
	return "", false
}

// normalizeUID maps the systemd spelling (underscores) and upper case to the API spelling.
func normalizeUID(uid string) string {
	return strings.ToLower(strings.ReplaceAll(uid, "_", "-"))
}

// cgroupPodUIDs returns the pod UIDs (normalized, each once) that content, the text of a
// /proc/<pid>/cgroup file, places the process in, in any hierarchy: none for a host process.
func cgroupPodUIDs(content string) []string {
	var out []string
	for line := range strings.Lines(content) {
		path, ok := cgroupLinePath(strings.TrimRight(line, "\n"))
		if !ok {
			continue
		}
		for seg := range strings.SplitSeq(strings.TrimSuffix(path, " (deleted)"), "/") {
			if uid, ok := segmentPodUID(seg); ok {
				if uid = normalizeUID(uid); validUID(uid) == nil && !slices.Contains(out, uid) {
					out = append(out, uid)
				}
			}
		}
	}
	return out
}

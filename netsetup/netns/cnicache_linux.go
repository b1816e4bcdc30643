package netns

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// recordSet is what one Find read of the CNI result cache: the pod's records, and counts.
type recordSet struct {
	dir     string
	absent  bool
	listErr error
	files   int // entries in the directory
	read    int // files read
	other   int // files not naming the pod UID, not parsed
	skipped int // files over MaxCNIRecordFiles, not read
	mine    []cniRecord
	ignored ignoredRecords
}

// ignoredRecords counts the record files not trusted, by reason.
type ignoredRecords struct {
	reasons []string // in order first seen
	count   map[string]int
	first   map[string]string // reason → the first file's detail
}

func (g *ignoredRecords) add(reason, detail string) {
	if g.count == nil {
		g.count, g.first = map[string]int{}, map[string]string{}
	}
	if g.count[reason] == 0 {
		g.reasons = append(g.reasons, reason)
		g.first[reason] = detail
	}
	g.count[reason]++
}

// Ignored returns how many files were ignored for reason ("" for all).
func (rs *recordSet) Ignored(reason string) int {
	if reason != "" {
		return rs.ignored.count[reason]
	}
	n := 0
	for _, c := range rs.ignored.count {
		n += c
	}
	return n
}

// Reasons a record file is ignored.
const (
	ignoredUnreadable = "unreadable"
	ignoredNotRegular = "not a regular file"
	ignoredOwner      = "not owned by root or writable by others"
	ignoredTooBig     = "larger than the limit"
	ignoredMalformed  = "malformed"
)

func (rs *recordSet) String() string {
	switch {
	case rs.absent:
		return rs.dir + " absent"
	case rs.listErr != nil:
		return fmt.Sprintf("%s unreadable: %v", rs.dir, rs.listErr)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d files in %s, %d records of the pod", rs.files, rs.dir, len(rs.mine))
	if len(rs.mine) > 0 {
		ids := make([]string, len(rs.mine))
		for i, r := range rs.mine {
			ids[i] = r.ContainerID + " " + r.NetNS
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(ids, ", "))
	}
	if rs.skipped > 0 {
		fmt.Fprintf(&b, ", %d not read (over the limit of %d files)", rs.skipped, MaxCNIRecordFiles)
	}
	for _, r := range rs.ignored.reasons {
		fmt.Fprintf(&b, ", %d ignored as %s (first: %s)", rs.ignored.count[r], r, rs.ignored.first[r])
	}
	return b.String()
}

// recordSet reads the CNI result cache once per Find: the records naming the pod UID.
func (s *search) recordSet() *recordSet {
	if s.records != nil {
		return s.records
	}
	s.f.recordScans.Add(1)
	rs := &recordSet{dir: s.f.opts.CNIResultsDir}
	s.records = rs
	names, err := readDirNames(rs.dir)
	if errors.Is(err, fs.ErrNotExist) {
		rs.absent = true
		return rs
	}
	if err != nil {
		rs.listErr = err
		return rs
	}
	slices.Sort(names)
	rs.files = len(names)
	if len(names) > MaxCNIRecordFiles {
		rs.skipped = len(names) - MaxCNIRecordFiles
		names = names[:MaxCNIRecordFiles]
	}
	uid := []byte(s.nuid)
	for _, name := range names {
		if s.ctx.Err() != nil {
			break
		}
		path := rs.dir + "/" + name
		data, reason, err := readRecordFile(path)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) { // removed meanwhile (CNI DEL)
				rs.ignored.add(reason, err.Error())
			}
			continue
		}
		rs.read++
		// Records of other pods are not parsed: the API spelling of the UID must appear as is.
		if !bytes.Contains(data, uid) {
			rs.other++
			continue
		}
		rec, err := parseCNIRecord(path, data)
		if err != nil {
			rs.ignored.add(ignoredMalformed, err.Error())
			continue
		}
		if rec.PodUID == s.nuid {
			rs.mine = append(rs.mine, rec)
		} else {
			rs.other++
		}
	}
	return rs
}

// readRecordFile reads one record file as libcni writes it: a regular file owned by root, not
// writable by group or others, at most MaxCNIRecordBytes. It never follows a symlink nor blocks
// on a FIFO. The reason says why a file is not trusted.
func readRecordFile(path string) ([]byte, string, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, ignoredNotRegular, fmt.Errorf("%s: a symbolic link", path)
		}
		return nil, ignoredUnreadable, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, ignoredUnreadable, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, ignoredNotRegular, fmt.Errorf("%s: mode %#o", path, st.Mode)
	case st.Uid != 0 || st.Mode&0o022 != 0:
		return nil, ignoredOwner, fmt.Errorf("%s: owner %d, mode %#o", path, st.Uid, st.Mode&0o7777)
	case st.Size > MaxCNIRecordBytes:
		return nil, ignoredTooBig, fmt.Errorf("%s: %d bytes, limit %d", path, st.Size, MaxCNIRecordBytes)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxCNIRecordBytes+1))
	if err != nil {
		return nil, ignoredUnreadable, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxCNIRecordBytes {
		return nil, ignoredTooBig, fmt.Errorf("%s: over %d bytes", path, MaxCNIRecordBytes)
	}
	return data, "", nil
}

// recordProving returns the pod's record whose netns path opens, now, to the namespace of h (same
// nsfs device and inode, compared on the opened fd while h is held), or nil and why none does.
func (s *search) recordProving(h *Handle) (*cniRecord, string) {
	rs := s.recordSet()
	if len(rs.mine) == 0 {
		return nil, fmt.Sprintf("%s: no record of the pod (%s)", StrategyCNICache, rs)
	}
	var why []string
	for i := range rs.mine {
		rec := &rs.mine[i]
		paths := recordNetnsPaths(rec.NetNS, s.f.opts.ProcDir, s.f.opts.NetnsDirs)
		if len(paths) == 0 {
			why = append(why, fmt.Sprintf("record %s names netns %s, outside the netns directories and /proc", rec.File, rec.NetNS))
			continue
		}
		for _, p := range paths {
			o, err := Open(p)
			if err != nil {
				why = append(why, fmt.Sprintf("record %s names netns %s: %v", rec.File, rec.NetNS, err))
				continue
			}
			same := o.Same(h)
			o.Close()
			if same {
				return rec, ""
			}
			why = append(why, fmt.Sprintf("record %s names netns %s, another namespace (inode %d)", rec.File, rec.NetNS, o.Inode()))
		}
	}
	return nil, fmt.Sprintf("%s: %s", StrategyCNICache, strings.Join(why, "; "))
}

package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Errors of Finder.Find, for errors.Is.
var (
	// ErrNotFound: no namespace holds the pod's IPs (yet). Transient: the sandbox may not exist yet.
	ErrNotFound = errors.New("network namespace not found")
	// ErrNotProven: namespaces hold the pod's IPs but no evidence proves any of them to be the pod's
	// (no CNI record of the pod names it, no process of the pod runs in it, or /proc and the CNI
	// cache are not readable). Transient: a CRI-O sandbox without infra container is proven once
	// its first container runs. The error is a *NotProvenError listing the candidates.
	ErrNotProven = errors.New("network namespace not proven to be the pod's")
	// ErrShared: the namespace proven to be the pod's also runs processes of another pod (a
	// privileged pod that entered it). The error is a *SharedError naming both.
	ErrShared = errors.New("network namespace shared with another pod")
	// ErrAmbiguous: several different namespaces are proven to be the pod's (a sandbox being
	// re-created). The error is an *AmbiguousError listing them.
	ErrAmbiguous = errors.New("ambiguous network namespace")
	// ErrHostNamespace: the only namespace holding the pod's IPs, or running the pod's processes,
	// is the host's (a hostNetwork pod, or an address on the node). It is never returned.
	ErrHostNamespace = errors.New("pod network namespace is the host's")
	// ErrUnsupported: network namespaces are Linux only.
	ErrUnsupported = fmt.Errorf("network namespaces are only supported on Linux: %w", errors.ErrUnsupported)
)

// Key identifies a namespace held open (or pinned by a path): the device and inode of its nsfs
// file. Inodes are reused once a namespace is gone, so compare Keys only between live namespaces.
type Key struct {
	Dev, Ino uint64
}

// Proof says how a namespace was proven to be the pod's (Handle.Proof), for logs and reasons.
type Proof struct {
	// Evidence is what proved it: StrategyCNICache and/or StrategyProcUID.
	Evidence []Strategy
	// SandboxID is the sandbox (infra container) ID of the CNI record that proved it, if any.
	SandboxID string
	// Record is the CNI result record file that proved it, if any.
	Record string
	// PIDs are processes of the pod seen in the namespace (up to a few), if /proc proved it.
	PIDs []int
	// HostProcs counts processes in it that run in no pod's cgroup (host tools that entered it).
	HostProcs int
	// Cached: the proof was made by an earlier Find for this namespace (same cookie), not rescanned.
	Cached bool
}

func (p Proof) String() string {
	if len(p.Evidence) == 0 {
		return "not proven"
	}
	var parts []string
	for _, e := range p.Evidence {
		switch e {
		case StrategyCNICache:
			parts = append(parts, fmt.Sprintf("%s record %s (sandbox %s)", e, p.Record, p.SandboxID))
		case StrategyProcUID:
			parts = append(parts, fmt.Sprintf("%s pids %v", e, p.PIDs))
		default:
			parts = append(parts, string(e))
		}
	}
	s := strings.Join(parts, ", ")
	if p.HostProcs > 0 {
		s += fmt.Sprintf(", %d host processes in it", p.HostProcs)
	}
	if p.Cached {
		s += " (cached)"
	}
	return s
}

// Proven reports whether some evidence proved the namespace.
func (p Proof) Proven() bool { return len(p.Evidence) > 0 }

// Candidate describes one namespace considered by Find, for the errors listing them.
type Candidate struct {
	Strategy Strategy     // which strategy found it
	Path     string       // where it was opened: a named netns file or /proc/<pid>/ns/net
	Inode    uint64       // nsfs inode, for display
	Holds    []netip.Addr // the pod IPs it holds
	PIDs     []int        // processes seen in it (up to a few), if known
	UIDMatch bool         // proven to be the pod's (see Proof)
	Proof    Proof        // how it was proven, if it was
	Why      string       // why it was not proven, if it was not
}

func (c Candidate) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (inode %d, %s, holds %v", c.Path, c.Inode, c.Strategy, c.Holds)
	if len(c.PIDs) > 0 {
		fmt.Fprintf(&b, ", pids %v", c.PIDs)
	}
	if c.UIDMatch {
		b.WriteString(", proven: " + c.Proof.String())
	}
	if c.Why != "" {
		b.WriteString(": " + c.Why)
	}
	b.WriteString(")")
	return b.String()
}

func candidateList(cs []Candidate) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.String()
	}
	return strings.Join(parts, ", ")
}

// AmbiguousError reports several different namespaces proven to be the pod's (a sandbox being
// re-created while the old one lives on).
type AmbiguousError struct {
	PodUID     string
	PodIPs     []netip.Addr
	Candidates []Candidate
	// Resolution says why nothing decided (e.g. "2 are proven to be the pod's").
	Resolution string
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("%v for pod UID %q with IPs %v: %d candidates: %s; %s",
		ErrAmbiguous, e.PodUID, e.PodIPs, len(e.Candidates), candidateList(e.Candidates), e.Resolution)
}

// Is makes errors.Is(err, ErrAmbiguous) true.
func (e *AmbiguousError) Is(target error) bool { return target == ErrAmbiguous }

// NotProvenError reports namespaces holding the pod's IPs that no evidence proves to be the pod's.
type NotProvenError struct {
	PodUID     string
	PodIPs     []netip.Addr
	Candidates []Candidate // each with Why
	Looked     []string    // what each strategy looked at
}

func (e *NotProvenError) Error() string {
	return fmt.Sprintf("%v: pod UID %q with IPs %v: %d candidates, none proven: %s; looked at: %s",
		ErrNotProven, e.PodUID, e.PodIPs, len(e.Candidates), candidateList(e.Candidates), strings.Join(e.Looked, "; "))
}

// Is makes errors.Is(err, ErrNotProven) true.
func (e *NotProvenError) Is(target error) bool { return target == ErrNotProven }

// SharedError reports a namespace proven to be the pod's that also runs processes of other pods.
type SharedError struct {
	PodUID    string
	Candidate Candidate
	PodPIDs   []int            // the pod's own processes in it
	Others    map[string][]int // other pod UIDs → their processes in it (up to a few each)
}

func (e *SharedError) Error() string {
	var others []string
	for _, uid := range sortedKeys(e.Others) {
		others = append(others, fmt.Sprintf("pod UID %q (pids %v)", uid, e.Others[uid]))
	}
	return fmt.Sprintf("%v: %s is pod UID %q's (pids %v) and also runs processes of %s: refused",
		ErrShared, e.Candidate, e.PodUID, e.PodPIDs, strings.Join(others, ", "))
}

// Is makes errors.Is(err, ErrShared) true.
func (e *SharedError) Is(target error) bool { return target == ErrShared }

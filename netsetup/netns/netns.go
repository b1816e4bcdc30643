// Package netns enters network namespaces and finds the network namespace of a pod.
//
// A namespace is held by file descriptor (Handle), never by path, and entered through Handle.Do,
// which follows the containernetworking/plugins pkg/ns pattern: the OS thread is locked and only
// unlocked after switching back succeeded. Goroutines started inside Do do not inherit the namespace.
//
// A Finder locates a pod's namespace with up to three strategies, in order (see Strategy): named
// namespaces matched by pod IP, a /proc scan matching the pod UID in the cgroup path, and a /proc
// scan matching the pod IP. Every candidate must hold one of the pod's IPs and must differ from the
// host's namespace; several different candidates are resolved by pod UID or reported as an
// AmbiguousError, never guessed.
//
// Every check reads the namespaces' addresses live, at the time of the Find. The Finder reads them
// without entering the namespaces when the kernel allows it (Linux 4.20 or later: an address dump
// naming the namespace by its nsid; a namespace without an nsid in the Finder's namespace gets
// one, as `ip netns set NAME auto` would give it), else inside each namespace.
//
// The implementation is Linux only; on other systems every call fails with ErrUnsupported.
package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
)

// Strategy names one way of finding a pod's network namespace.
type Strategy string

const (
	// StrategyNamed looks at the named namespaces in Options.NetnsDirs (containerd's cni-<uuid>,
	// CRI-O's) and keeps those holding a pod IP. Needs no ptrace rights.
	StrategyNamed Strategy = "named"
	// StrategyProcUID scans Options.ProcDir for processes whose /proc/<pid>/cgroup carries the pod
	// UID and opens their /proc/<pid>/ns/net. Needs CAP_SYS_PTRACE over the pods' processes.
	StrategyProcUID Strategy = "proc-uid"
	// StrategyProcIP opens each distinct /proc/<pid>/ns/net once and keeps those holding a pod IP.
	// Needs CAP_SYS_PTRACE over the pods' processes.
	StrategyProcIP Strategy = "proc-ip"
)

// DefaultStrategies is the order the design prescribes: cheapest and least privileged first.
var DefaultStrategies = []Strategy{StrategyNamed, StrategyProcUID, StrategyProcIP}

// Defaults for Options.
var (
	DefaultProcDir   = "/proc"
	DefaultNetnsDirs = []string{"/var/run/netns", "/run/netns"}
)

// ParseStrategies parses a comma-separated list such as "named,proc-uid" (for a flag).
func ParseStrategies(s string) ([]Strategy, error) {
	var out []Strategy
	for _, part := range strings.Split(s, ",") {
		st := Strategy(strings.TrimSpace(part))
		if err := st.valid(); err != nil {
			return nil, fmt.Errorf("discovery strategies %q: %w", s, err)
		}
		out = append(out, st)
	}
	return out, nil
}

func (s Strategy) valid() error {
	switch s {
	case StrategyNamed, StrategyProcUID, StrategyProcIP:
		return nil
	}
	return fmt.Errorf("unknown strategy %q (want %s, %s or %s)", string(s), StrategyNamed, StrategyProcUID, StrategyProcIP)
}

// Options configure a Finder. The zero value means the defaults.
type Options struct {
	// Strategies to run, in order; nil means DefaultStrategies. Duplicates are an error.
	Strategies []Strategy
	// ProcDir is the host's /proc ("/host/proc" in a container mounting it); "" means DefaultProcDir.
	// PID 1 there is the host's init, whose network namespace is never returned.
	ProcDir string
	// NetnsDirs hold named network namespaces; nil means DefaultNetnsDirs. Directories that are the
	// same (/var/run being a link to /run) are read once; missing ones are skipped.
	NetnsDirs []string
	// Cache keeps one namespace fd per pod UID, validated on each hit (see Finder.Find).
	Cache bool
}

// withDefaults validates o and fills in the defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Strategies == nil {
		o.Strategies = DefaultStrategies
	}
	if len(o.Strategies) == 0 {
		return o, errors.New("discovery strategies: empty list: enable at least one of named, proc-uid, proc-ip")
	}
	seen := map[Strategy]bool{}
	for _, s := range o.Strategies {
		if err := s.valid(); err != nil {
			return o, fmt.Errorf("discovery strategies: %w", err)
		}
		if seen[s] {
			return o, fmt.Errorf("discovery strategies: %q listed twice", string(s))
		}
		seen[s] = true
	}
	o.Strategies = append([]Strategy(nil), o.Strategies...)
	if o.ProcDir == "" {
		o.ProcDir = DefaultProcDir
	}
	if !filepath.IsAbs(o.ProcDir) {
		return o, fmt.Errorf("proc directory %q: want an absolute path", o.ProcDir)
	}
	o.ProcDir = filepath.Clean(o.ProcDir)
	if o.NetnsDirs == nil {
		o.NetnsDirs = DefaultNetnsDirs
	}
	dirs := make([]string, 0, len(o.NetnsDirs))
	for _, d := range o.NetnsDirs {
		if !filepath.IsAbs(d) {
			return o, fmt.Errorf("netns directory %q: want an absolute path", d)
		}
		dirs = append(dirs, filepath.Clean(d))
	}
	o.NetnsDirs = dirs
	return o, nil
}

// Errors of Finder.Find, for errors.Is.
var (
	// ErrNotFound: no namespace holds the pod's IPs (yet). Transient: the sandbox may not exist yet.
	ErrNotFound = errors.New("network namespace not found")
	// ErrAmbiguous: several different namespaces qualify and the pod UID does not single one out.
	// The error is an *AmbiguousError listing them.
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

// Candidate describes one namespace considered by Find, for AmbiguousError.
type Candidate struct {
	Strategy Strategy     // which strategy found it
	Path     string       // where it was opened: a named netns file or /proc/<pid>/ns/net
	Inode    uint64       // nsfs inode, for display
	Holds    []netip.Addr // the pod IPs it holds
	PIDs     []int        // processes seen in it (up to a few), if known
	UIDMatch bool         // some process in it carries the pod UID in its cgroup
}

func (c Candidate) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (inode %d, %s, holds %v", c.Path, c.Inode, c.Strategy, c.Holds)
	if len(c.PIDs) > 0 {
		fmt.Fprintf(&b, ", pids %v", c.PIDs)
	}
	if c.UIDMatch {
		b.WriteString(", pod UID matches")
	}
	b.WriteString(")")
	return b.String()
}

// AmbiguousError reports several different namespaces that hold the pod's IPs when the pod UID did
// not single one out (a leaked namespace, a reused IP, a sandbox being re-created).
type AmbiguousError struct {
	PodUID     string
	PodIPs     []netip.Addr
	Candidates []Candidate
	// Resolution says why the pod UID did not decide (e.g. "2 candidates run processes of the pod").
	Resolution string
}

func (e *AmbiguousError) Error() string {
	parts := make([]string, len(e.Candidates))
	for i, c := range e.Candidates {
		parts[i] = c.String()
	}
	return fmt.Sprintf("%v for pod UID %q with IPs %v: %d candidates: %s; %s",
		ErrAmbiguous, e.PodUID, e.PodIPs, len(e.Candidates), strings.Join(parts, ", "), e.Resolution)
}

// Is makes errors.Is(err, ErrAmbiguous) true.
func (e *AmbiguousError) Is(target error) bool { return target == ErrAmbiguous }

// validatePod checks Find's arguments and normalizes the IPs (unmapped, deduplicated).
func validatePod(podUID string, podIPs []netip.Addr) ([]netip.Addr, error) {
	if err := validUID(podUID); err != nil {
		return nil, err
	}
	if len(podIPs) == 0 {
		return nil, fmt.Errorf("pod UID %q: no pod IPs given", podUID)
	}
	out := make([]netip.Addr, 0, len(podIPs))
	for i, ip := range podIPs {
		if !ip.IsValid() || ip.IsUnspecified() {
			return nil, fmt.Errorf("pod UID %q: pod IP #%d %q is not a usable address", podUID, i, ip.String())
		}
		ip = ip.Unmap().WithZone("")
		if !containsAddr(out, ip) {
			out = append(out, ip)
		}
	}
	return out, nil
}

// validUID accepts what the kubelet puts in cgroup paths: API UIDs (UUIDs) and static pods' config
// hashes (32 hex digits): hex digits and hyphens, at most 64 characters.
func validUID(uid string) error {
	if uid == "" || len(uid) > 64 {
		return fmt.Errorf("pod UID %q: want 1 to 64 hex digits and hyphens", uid)
	}
	for _, r := range uid {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F' || r == '-') {
			return fmt.Errorf("pod UID %q: character %q: want hex digits and hyphens", uid, string(r))
		}
	}
	return nil
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// sameAddrSet reports whether a and b hold the same addresses, ignoring order.
func sameAddrSet(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !containsAddr(b, x) {
			return false
		}
	}
	return true
}

// Package netns enters network namespaces and finds, and proves, the network namespace of a pod.
//
// A namespace is held by file descriptor (Handle), never by path, and entered through Handle.Do,
// which follows the containernetworking/plugins pkg/ns pattern: the OS thread is locked and only
// unlocked after switching back succeeded. Goroutines started inside Do do not inherit the namespace.
//
// A Finder locates a pod's namespace and returns it only when node-local evidence proves it is that
// pod's. The pod's IPs come from its API status, which a tenant (or an IP reused by the CNI) can make
// point at another pod's namespace: an IP match is a hint, never proof. The strategies (see Strategy)
// find candidates, namespaces holding one of the pod's IPs and differing from the host's; two of
// them are also evidence, and every candidate, whichever strategy found it, is checked against the
// evidence that is enabled:
//
//   - cni-cache: a CNI result record that the runtime wrote as root (libcni's cache, used by
//     containerd and CRI-O) names the pod UID and a netns path that opens to the very namespace;
//   - proc-uid: a process in the namespace runs in a cgroup of the pod (needs CAP_SYS_PTRACE). The
//     same /proc walk refuses a namespace that also runs processes of another pod (SharedError).
//
// named (named namespaces) and proc-ip (every process's namespace) find candidates by IP only.
// A candidate nothing proves is never returned: Find fails with a *NotProvenError saying what was
// looked at. Several proven candidates are an *AmbiguousError, never guessed.
//
// Every check reads the namespaces' addresses live, at the time of the Find. The Finder reads them
// without entering the namespaces when the kernel allows it (Linux 4.20 or later: an address dump
// naming the namespace by its nsid; a namespace without an nsid in the Finder's namespace gets
// one, as `ip netns set NAME auto` would give it), else inside each namespace.
//
// The implementation is Linux only; on other systems every call fails with ErrUnsupported.
package netns

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Strategy names one way of finding a pod's network namespace. StrategyCNICache and StrategyProcUID
// are also evidence of ownership (see the package documentation). The names are the flag values.
type Strategy string

const (
	// StrategyNamed looks at the named namespaces in Options.NetnsDirs (containerd's cni-<uuid>,
	// CRI-O's) and keeps those holding a pod IP. Proves nothing. Needs no ptrace rights.
	StrategyNamed Strategy = "named"
	// StrategyCNICache reads the CNI result records in Options.CNIResultsDir
	// (<network>-<sandbox id>-<ifname>, written by libcni as root) whose K8S_POD_UID is the pod's,
	// opens the netns path they name and keeps those holding a pod IP. Evidence: a record of the
	// pod naming a path that opens to the candidate proves it. Needs read access to the directory.
	StrategyCNICache Strategy = "cni-cache"
	// StrategyProcUID scans Options.ProcDir for processes whose /proc/<pid>/cgroup carries the pod
	// UID and opens their /proc/<pid>/ns/net. Evidence: such a process in the candidate proves it,
	// and a process of another pod in it refuses it. Needs CAP_SYS_PTRACE over the pods' processes.
	StrategyProcUID Strategy = "proc-uid"
	// StrategyProcIP opens each distinct /proc/<pid>/ns/net once and keeps those holding a pod IP.
	// Proves nothing. Needs CAP_SYS_PTRACE over the pods' processes.
	StrategyProcIP Strategy = "proc-ip"
)

// allStrategies lists the strategies in the default order: cheapest and least privileged first.
var allStrategies = []Strategy{StrategyNamed, StrategyCNICache, StrategyProcUID, StrategyProcIP}

// DefaultStrategies is the order the design prescribes: cheapest and least privileged first.
var DefaultStrategies = append([]Strategy(nil), allStrategies...)

// Defaults for Options.
var (
	DefaultProcDir       = "/proc"
	DefaultNetnsDirs     = []string{"/var/run/netns", "/run/netns"}
	DefaultCNIResultsDir = "/var/lib/cni/results"
)

// ParseStrategies parses a comma-separated list such as "named,cni-cache" (for a flag).
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
	for _, k := range allStrategies {
		if s == k {
			return nil
		}
	}
	return fmt.Errorf("unknown strategy %q (want %s)", string(s), strategyList())
}

// Evidence reports whether the strategy is also evidence of ownership (cni-cache, proc-uid).
func (s Strategy) Evidence() bool { return s == StrategyCNICache || s == StrategyProcUID }

func strategyList() string {
	names := make([]string, len(allStrategies))
	for i, s := range allStrategies {
		names[i] = string(s)
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// Options configure a Finder. The zero value means the defaults.
type Options struct {
	// Strategies to run, in order; nil means DefaultStrategies. Duplicates are an error, and so is a
	// list without evidence (cni-cache or proc-uid): it could never prove a namespace.
	Strategies []Strategy
	// ProcDir is the host's /proc ("/host/proc" in a container mounting it); "" means DefaultProcDir.
	// PID 1 there is the host's init, whose network namespace is never returned.
	ProcDir string
	// NetnsDirs hold named network namespaces; nil means DefaultNetnsDirs. Directories that are the
	// same (/var/run being a link to /run) are read once; missing ones are skipped. A CNI record's
	// netns path (/var/run/netns/<name>, a host path) is opened in the NetnsDirs that are that
	// directory or end with it ("/host/var/run/netns").
	NetnsDirs []string
	// CNIResultsDir is libcni's result cache ("/host/var/lib/cni/results" in a container mounting
	// it); "" means DefaultCNIResultsDir. Read by the cni-cache strategy only; a missing directory
	// proves nothing and is no error.
	CNIResultsDir string
	// Cache keeps one namespace fd per pod UID, validated on each hit, and the proof of each
	// namespace by its cookie (see Finder.Find).
	Cache bool
}

// Validate reports whether o is usable by New (for a flag's validation).
func (o Options) Validate() error {
	_, err := o.withDefaults()
	return err
}

// withDefaults validates o and fills in the defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Strategies == nil {
		o.Strategies = DefaultStrategies
	}
	if len(o.Strategies) == 0 {
		return o, fmt.Errorf("discovery strategies: empty list: enable at least one of %s", strategyList())
	}
	seen := map[Strategy]bool{}
	evidence := false
	for _, s := range o.Strategies {
		if err := s.valid(); err != nil {
			return o, fmt.Errorf("discovery strategies: %w", err)
		}
		if seen[s] {
			return o, fmt.Errorf("discovery strategies: %q listed twice", string(s))
		}
		seen[s] = true
		evidence = evidence || s.Evidence()
	}
	if !evidence {
		return o, fmt.Errorf("discovery strategies %v: none proves whose a namespace is (an IP is only a hint): add %s or %s",
			o.Strategies, StrategyCNICache, StrategyProcUID)
	}
	o.Strategies = append([]Strategy(nil), o.Strategies...)
	var err error
	if o.ProcDir, err = absDir("proc directory", o.ProcDir, DefaultProcDir); err != nil {
		return o, err
	}
	if o.CNIResultsDir, err = absDir("CNI results directory", o.CNIResultsDir, DefaultCNIResultsDir); err != nil {
		return o, err
	}
	if o.NetnsDirs == nil {
		o.NetnsDirs = DefaultNetnsDirs
	}
	dirs := make([]string, 0, len(o.NetnsDirs))
	for _, d := range o.NetnsDirs {
		if d, err = absDir("netns directory", d, ""); err != nil {
			return o, err
		}
		dirs = append(dirs, d)
	}
	o.NetnsDirs = dirs
	return o, nil
}

func absDir(what, dir, def string) (string, error) {
	if dir == "" {
		dir = def
	}
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("%s %q: want an absolute path", what, dir)
	}
	return filepath.Clean(dir), nil
}

func (o Options) has(s Strategy) bool {
	for _, x := range o.Strategies {
		if x == s {
			return true
		}
	}
	return false
}

// Package iptablestest is a fake of the iptables-save and iptables-restore tools for unit tests that
// run without root. It keeps parsed tables per network namespace, backend (nft, legacy) and family,
// applies each iptables-restore input the way the real tool does (per table, at COMMIT, all or
// nothing; refusing what the real one refuses: -N of an existing chain, -D of a missing rule, a jump
// to a missing chain, deleting a chain still used, a missing COMMIT, DROP in nat, TPROXY outside
// mangle), honours the xtables lock file of the legacy backend, and answers iptables-save in the
// canonical form (generic matches in iptables' order, implicit "-m tcp", /32 prefixes, hex marks,
// default masks, user chains sorted). Exit codes and messages follow iptables v1.8.9.
//
// It models the matches tcp, udp, multiport, owner, mark, connmark and conntrack and the targets
// ACCEPT, DROP, RETURN, REDIRECT, TPROXY, MARK, CONNMARK, CT and jumps to user chains: the rules
// Istio's sidecar generator writes. Anything else is refused with a message naming the fake, never
// accepted silently. Its differential test (root) feeds the same inputs to the real tools in a fresh
// network namespace and compares the saves.
package iptablestest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// Backends, as the tools' names spell them.
const (
	NFT    = "nft"
	Legacy = "legacy"
)

// ExitError is a tool run that exited non-zero, with what it printed on stderr.
type ExitError struct {
	Code   int
	Stderr string
}

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d: %s", e.Code, e.Stderr) }

// Call is one tool run the fake answered.
type Call struct {
	Namespace string
	Name      string
	Args      []string
}

// Fake is the iptables tools of one simulated node: a host network namespace and any number of
// others. Tool runs go to the namespace whose Do is running (the host's outside any Do), the way
// the real tools run in the calling thread's namespace. Do calls are serialized.
type Fake struct {
	// LockWait caps how long a legacy restore waits for a held xtables lock ("--wait=10" waits ten
	// seconds for real); zero means 100ms.
	LockWait time.Duration
	// BeforeRestore and AfterRestore, when set, run before every restore and after every
	// successful one, with its namespace: another writer acting between a probe and the restore,
	// or between a restore and its read-back.
	BeforeRestore, AfterRestore func(ns *Namespace)

	doMu        sync.Mutex
	mu          sync.Mutex
	host, cur   *Namespace
	missing     map[string]bool
	unavailable map[string]bool
	calls       []Call
	scratches   int
}

// New returns a fake node whose host namespace holds no rules.
func New() *Fake {
	f := &Fake{missing: map[string]bool{}, unavailable: map[string]bool{}}
	f.host = f.NewNamespace("host")
	return f
}

// Host is the host's network namespace.
func (f *Fake) Host() *Namespace { return f.host }

// NewNamespace returns an empty network namespace (a pod's).
func (f *Fake) NewNamespace(name string) *Namespace {
	return &Namespace{name: name, fake: f, sets: map[setKey]*tableSet{}}
}

// RemoveBackend makes a backend's tools absent: running them fails as exec does for a missing file.
func (f *Fake) RemoveBackend(backend string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.missing[backend] = true
}

// RemoveTarget makes a target unavailable, as when its kernel module cannot be loaded: a rule using
// it is refused with "Couldn't load target".
func (f *Fake) RemoveTarget(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unavailable[name] = true
}

// Calls returns the tool runs so far.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}

// Scratch runs fn inside a new, empty namespace that is dropped afterwards.
func (f *Fake) Scratch(fn func() (string, error)) (string, error) {
	f.mu.Lock()
	f.scratches++
	ns := f.NewNamespace(fmt.Sprintf("scratch-%d", f.scratches))
	f.mu.Unlock()
	var out string
	err := ns.Do(func() error {
		var err error
		out, err = fn()
		return err
	})
	return out, err
}

// Current is the namespace tool runs go to now.
func (f *Fake) Current() *Namespace {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur != nil {
		return f.cur
	}
	return f.host
}

// Run is the command runner: name is a tool such as "iptables-nft-restore" or
// "ip6tables-legacy-save"; env carries XTABLES_LOCKFILE; stdin is a restore's input. It returns the
// tool's stdout, an *ExitError when the tool fails, or an *exec.Error for a tool that is absent.
func (f *Fake) Run(ctx context.Context, env []string, stdin, name string, args ...string) (string, error) {
	backend, fam, tool, ok := parseName(name)
	ns := f.Current()
	f.mu.Lock()
	f.calls = append(f.calls, Call{Namespace: ns.name, Name: name, Args: append([]string(nil), args...)})
	if !ok || f.missing[backend] {
		f.mu.Unlock()
		return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
	}
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if tool == "save" {
		return ns.save(backend, fam, args)
	}
	opts, err := parseRestoreArgs(prog(backend, fam, "restore"), args)
	if err != nil {
		return "", err
	}
	if backend == Legacy { // iptables-nft ignores the xtables lock
		unlock, err := f.lock(env, opts.wait)
		if err != nil {
			return "", err
		}
		defer unlock()
	}
	if f.BeforeRestore != nil {
		f.BeforeRestore(ns)
	}
	if err := ns.restore(backend, fam, stdin, opts.noflush); err != nil {
		return "", err
	}
	if f.AfterRestore != nil {
		f.AfterRestore(ns)
	}
	return "", nil
}

// parseName splits "ip6tables-nft-save" into nft, IPv6, save.
func parseName(name string) (backend string, fam rules.Family, tool string, ok bool) {
	prefix, rest, ok1 := strings.Cut(name, "-")
	backend, tool, ok2 := strings.Cut(rest, "-")
	switch prefix {
	case "iptables":
		fam = rules.IPv4
	case "ip6tables":
		fam = rules.IPv6
	default:
		return "", 0, "", false
	}
	ok = ok1 && ok2 && (backend == NFT || backend == Legacy) && (tool == "save" || tool == "restore")
	return backend, fam, tool, ok
}

// prog is how a tool names itself in its messages.
func prog(backend string, fam rules.Family, tool string) string {
	p := "iptables"
	if fam == rules.IPv6 {
		p = "ip6tables"
	}
	if backend == NFT {
		return p + "-nft-" + tool
	}
	return p + "-" + tool
}

type restoreOpts struct {
	noflush bool
	wait    time.Duration // -1: no --wait
}

func parseRestoreArgs(name string, args []string) (restoreOpts, error) {
	o := restoreOpts{wait: -1}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--noflush" || a == "-n":
			o.noflush = true
		case a == "--wait" || a == "-w":
			o.wait = time.Duration(1<<62 - 1)
			if i+1 < len(args) && args[i+1] != "" && args[i+1][0] != '-' {
				i++
				if err := parseWait(&o, args[i]); err != nil {
					return o, &ExitError{2, name + ": " + err.Error() + "\n"}
				}
			}
		case strings.HasPrefix(a, "--wait="):
			if err := parseWait(&o, a[len("--wait="):]); err != nil {
				return o, &ExitError{2, name + ": " + err.Error() + "\n"}
			}
		default:
			return o, &ExitError{2, fmt.Sprintf("%s: unknown option -- '%s'\n", name, a)}
		}
	}
	return o, nil
}

func parseWait(o *restoreOpts, v string) error {
	var n int
	if _, err := fmt.Sscanf(v, "%d", &n); err != nil || n < 0 {
		return fmt.Errorf("wait seconds not numeric: %q", v)
	}
	o.wait = time.Duration(n) * time.Second
	return nil
}

// lock takes the xtables lock file named by XTABLES_LOCKFILE with flock, as legacy restore does:
// waiting up to wait (capped by LockWait), failing with exit code 4 when it stays held. Without
// --wait the real tool warns and goes on. The fake refuses to run without XTABLES_LOCKFILE, so a
// unit test never touches the node's /run/xtables.lock.
func (f *Fake) lock(env []string, wait time.Duration) (func(), error) {
	path := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "XTABLES_LOCKFILE="); ok {
			path = v
		}
	}
	if path == "" {
		return nil, errors.New("fake iptables: XTABLES_LOCKFILE is not set (the real tool would use the node's /run/xtables.lock)")
	}
	file, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, &ExitError{4, fmt.Sprintf("Fatal: can't open lock file %s: %v\n", path, err)}
	}
	limit := f.LockWait
	if limit == 0 {
		limit = 100 * time.Millisecond
	}
	budget := min(max(wait, 0), limit)
	deadline := time.Now().Add(budget)
	for {
		err := unix.Flock(int(file.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { file.Close() }, nil
		}
		if wait < 0 {
			return func() { file.Close() }, nil // no --wait: iptables-restore warns and goes on
		}
		if time.Now().After(deadline) {
			file.Close()
			return nil, &ExitError{4, fmt.Sprintf("Another app is currently holding the xtables lock. Stopped waiting after %ds.\n", int(wait/time.Second))}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

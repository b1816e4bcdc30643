package netsetup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/internal/procnet"
	"github.com/redhat-cop/istio-pod-network-controller/internal/scratchns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// Applier programs network namespaces. It is safe for concurrent use on different namespaces;
// callers serialize operations on the same pod (nft ignores the xtables lock).
type Applier struct {
	backend Backend
	lockDir string
	system

	canonical *stateCache // canonical form by backend, family and payload hash, LRU bounded by bytes
}

// system is what the Applier does on the node besides its own bookkeeping: run the iptables tools,
// enter a fresh network namespace, program routes, list the loaded legacy tables. Unit tests replace
// it with a fake node (package iptablestest).
type system struct {
	run     runner
	scratch func(fn func() (string, error)) (string, error) // fn on a thread in a new, empty network namespace
	routes  func(r rules.Routes, write bool) (bool, error)  // syncRoutes in the calling thread's namespace
	tables  func(f rules.Family) ([]string, error)          // legacyTables of the calling thread's namespace
	dormant func(f rules.Family) ([]string, error)          // dormantTables (nft backend) of the calling thread's namespace
	wake    func(f rules.Family, tables []string) error     // wakeTables in the calling thread's namespace
}

// hostSystem is the real node.
func hostSystem() system {
	return system{run: execTool, scratch: scratchNamespace, routes: syncRoutes, tables: legacyTables,
		dormant: dormantTables, wake: wakeTables}
}

// NewApplier validates opts, detects the backend when it is not given, and creates LockDir.
func NewApplier(ctx context.Context, opts Options) (*Applier, error) {
	return newApplierOn(ctx, opts, hostSystem())
}

// newApplierOn is NewApplier on the given node.
func newApplierOn(ctx context.Context, opts Options, sys system) (*Applier, error) {
	if opts.LockDir == "" {
		return nil, errors.New("xtables lock directory: must be set")
	}
	if err := os.MkdirAll(opts.LockDir, 0o700); err != nil {
		return nil, fmt.Errorf("xtables lock directory %q: %w", opts.LockDir, err)
	}
	a := &Applier{backend: opts.Backend, lockDir: opts.LockDir, system: sys,
		canonical: newStateCache(canonicalCacheBytes, canonicalCacheEntries)}
	if a.backend == "" {
		b, err := DetectBackend(ctx, a.run)
		if err != nil {
			return nil, err
		}
		a.backend = b
	}
	return a, nil
}

// Backend returns the backend in use.
func (a *Applier) Backend() Backend { return a.backend }

// DetectBackend returns the node's iptables backend, looked for in the calling thread's (the
// host's) network namespace: the kubelet's KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY chains in
// the nft backend, then in legacy; nft when neither has them. It never looks inside a pod.
func DetectBackend(ctx context.Context, run runner) (Backend, error) {
	var errs []error
	for _, b := range []Backend{BackendNFT, BackendLegacy} {
		out, err := run(ctx, os.Environ(), "", binary(b, rules.IPv4, "save"), "-t", "mangle")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if strings.Contains(out, ":KUBE-IPTABLES-HINT") || strings.Contains(out, ":KUBE-KUBELET-CANARY") {
			return b, nil
		}
	}
	if len(errs) == 2 {
		return "", fmt.Errorf("detect iptables backend: %w", errors.Join(errs...))
	}
	return BackendNFT, nil
}

// LockFile is the xtables lock file of a pod.
func (a *Applier) LockFile(key string) string {
	return filepath.Join(a.lockDir, strings.ReplaceAll(key, "/", "_")+".lock")
}

// Forget removes the pod's lock file.
func (a *Applier) Forget(key string) {
	_ = os.Remove(a.LockFile(key))
}

func (a *Applier) env(key string) []string {
	return append(os.Environ(), "XTABLES_LOCKFILE="+a.LockFile(key))
}

// Apply programs ns with the rules of cfg: one iptables-restore --noflush per family that needs a
// change, then a read-back that must match the canonical form, then the routes. Applying the same
// configuration again changes nothing. key names the pod (its UID) for the lock file.
func (a *Applier) Apply(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (Result, error) {
	return a.sync(ctx, ns, key, cfg, true)
}

// Verify checks that ns holds exactly the rules and routes of cfg. A difference is ErrDrift, with
// the first difference in the message.
func (a *Applier) Verify(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (Result, error) {
	return a.sync(ctx, ns, key, cfg, false)
}

func (a *Applier) sync(ctx context.Context, ns Namespace, key string, cfg *rules.Config, write bool) (Result, error) {
	rs, err := rules.Generate(cfg)
	if err != nil {
		return Result{}, err
	}
	res := Result{Hash: rs.Hash(), Families: contract.FamiliesIPv4}
	if cfg.EnableIPv6 {
		res.Families = contract.FamiliesDual
	}
	want := map[rules.Family]State{}
	for _, f := range rs.Families() {
		if want[f], err = a.canonicalState(ctx, rs, f); err != nil {
			return Result{}, err
		}
	}
	err = ns.Do(func() error {
		tl, done, err := a.runnerFor(key)
		if err != nil {
			return err
		}
		defer done()
		for _, f := range rs.Families() {
			changed, err := a.syncFamily(ctx, tl, rs, f, want[f], write)
			if err != nil {
				return err
			}
			res.Changed = res.Changed || changed
		}
		changed, err := a.routes(rs.Routes(), write)
		res.Changed = res.Changed || changed
		return err
	})
	if err != nil {
		return Result{}, fmt.Errorf("network namespace %s: %w", ns.Path(), err)
	}
	return res, nil
}

// syncFamily probes one family, and when it differs from want either reports drift (write false)
// or replaces our rules in one restore and checks the result.
func (a *Applier) syncFamily(ctx context.Context, tl tools, rs *rules.RuleSet, f rules.Family, want State, write bool) (bool, error) {
	have, err := a.probe(ctx, tl, f)
	if err != nil {
		return false, err
	}
	ok, diff := want.Equal(have)
	if ok {
		return false, nil
	}
	if !write {
		return false, fmt.Errorf("%w: %s: %s", ErrDrift, f, diff)
	}
	if sleeping := have.Dormant(); len(sleeping) > 0 {
		if err := a.wake(f, sleeping); err != nil {
			return false, err
		}
	}
	tx := Transaction(rs, f, have)
	if _, err := tl.run(ctx, tl.env, tx, binary(a.backend, f, "restore"), "--noflush", "--wait=10"); err != nil {
		return false, err
	}
	have, err = a.probe(ctx, tl, f)
	if err != nil {
		return true, err
	}
	if ok, diff := want.Equal(have); !ok {
		return true, fmt.Errorf("%w after restore: %s: %s", ErrDrift, f, diff)
	}
	return true, nil
}

func (a *Applier) probe(ctx context.Context, tl tools, f rules.Family) (State, error) {
	out, err := a.save(ctx, tl, f)
	if err != nil {
		return nil, err
	}
	st, err := ParseSave(out)
	if err != nil || a.backend != BackendNFT || len(st) == 0 {
		return st, err // no table of ours (a fresh pod's first probe): no flag to read
	}
	sleeping, err := a.dormant(f)
	if err != nil {
		return nil, err
	}
	for _, name := range sleeping {
		if t := st[name]; t != nil {
			t.IsDormant = true
		}
	}
	return st, nil
}

// save runs iptables-save for family f. Inside a pod's user namespace, legacy iptables-save cannot
// read the namespace's table list (/proc/net/ip_tables_names belongs to the host's root): the
// list is read here, outside it, and each table saved by name.
func (a *Applier) save(ctx context.Context, tl tools, f rules.Family) (string, error) {
	if !tl.userns || a.backend != BackendLegacy {
		return tl.run(ctx, tl.env, "", binary(a.backend, f, "save"))
	}
	tables, err := a.tables(f)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	for _, table := range tables {
		s, err := tl.run(ctx, tl.env, "", binary(a.backend, f, "save"), "-t", table)
		if err != nil {
			return "", err
		}
		out.WriteString(s)
	}
	return out.String(), nil
}

// legacyTables lists the legacy tables that exist in the calling thread's network namespace: none
// when the module is not loaded; an unreadable list is an error, never taken for none.
func legacyTables(f rules.Family) ([]string, error) {
	if f == rules.IPv6 {
		return procnet.LegacyTables(procnet.Table6Names)
	}
	return procnet.LegacyTables(procnet.TableNames)
}

// Live returns iptables-save's output for each family in ns (for inspect).
func (a *Applier) Live(ctx context.Context, ns Namespace, key string, families []rules.Family) (map[rules.Family]string, error) {
	out := map[rules.Family]string{}
	err := ns.Do(func() error {
		tl, done, err := a.runnerFor(key)
		if err != nil {
			return err
		}
		defer done()
		for _, f := range families {
			if out[f], err = a.save(ctx, tl, f); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// ForeignRules reports whether ns holds ISTIO_* chains in the other backend (two rule sets would
// both be live). For legacy it reads the namespace's loaded table names first, so it never
// creates legacy tables in a pod that has none.
func (a *Applier) ForeignRules(ctx context.Context, ns Namespace, key string) (bool, error) {
	other := a.backend.Other()
	found := false
	err := ns.Do(func() error {
		for _, f := range []rules.Family{rules.IPv4, rules.IPv6} {
			if other == BackendLegacy {
				tables, err := a.tables(f)
				if err != nil {
					return err
				}
				if len(tables) == 0 {
					continue // never create legacy tables in a pod that has none
				}
			}
			out, err := a.run(ctx, a.env(key), "", binary(other, f, "save"))
			if err != nil {
				return err
			}
			st, err := ParseSave(out)
			if err != nil {
				return err
			}
			if !st.Empty() {
				found = true
				return nil
			}
		}
		return nil
	})
	return found, err
}

// canonicalState returns how iptables-save prints family f of rs with this backend: obtained once
// per distinct payload by a round trip through a scratch network namespace, then cached.
func (a *Applier) canonicalState(ctx context.Context, rs *rules.RuleSet, f rules.Family) (State, error) {
	payload := rs.Payload(f)
	if payload == "" {
		return State{}, nil
	}
	sum := sha256.Sum256([]byte(payload))
	key := string(a.backend) + "/" + f.String() + "/" + hex.EncodeToString(sum[:])
	st, ok := a.canonical.get(key)
	if ok {
		return st, nil
	}
	out, err := a.inScratchNamespace(func() (string, error) {
		env := a.env("scratch-" + hex.EncodeToString(sum[:8]))
		if _, err := a.run(ctx, env, payload, binary(a.backend, f, "restore"), "--wait=10"); err != nil {
			return "", err
		}
		return a.run(ctx, env, "", binary(a.backend, f, "save"))
	})
	if err != nil {
		return nil, fmt.Errorf("canonical form of the %s rules (scratch namespace): %w", f, err)
	}
	if st, err = ParseSave(out); err != nil {
		return nil, err
	}
	a.canonical.put(key, st)
	return st, nil
}

// inScratchNamespace runs fn in a new, empty network namespace (scratchNamespace on a real node).
func (a *Applier) inScratchNamespace(fn func() (string, error)) (string, error) { return a.scratch(fn) }

// scratchNamespace runs fn in a new, empty network namespace on a thread of its own that the Go
// runtime destroys afterwards (scratchns.Run).
func scratchNamespace(fn func() (string, error)) (string, error) { return scratchns.Run(fn) }

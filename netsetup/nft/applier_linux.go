package nft

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/mdlayher/netlink"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// Applier programs network namespaces with Istio's native nftables rules over netlink: no nft
// binary, no iptables tools. It has the shape of netsetup.Applier. Callers serialize operations
// on one pod; different pods may be programmed concurrently.
type Applier struct {
	mu        sync.Mutex
	plans     map[string]*plan // by rules.Config.Key
	planBytes int
}

// NewApplier returns an Applier.
func NewApplier() *Applier { return &Applier{plans: map[string]*plan{}} }

// Apply makes ns hold exactly the nftables rules and routes of cfg: it reads our tables back and
// when they differ from the model replaces them in one atomic netlink batch, then reads them back
// again, and the read-back must equal the model. Applying the same configuration again writes
// nothing. First, in the same entry into ns and on the same socket, it looks for iptables rules
// (as Foreign does) and when there are any writes nothing and fails with a *ForeignError. key
// (the pod UID) is unused: nf_tables transactions need no lock file.
func (a *Applier) Apply(ctx context.Context, ns netsetup.Namespace, key string, cfg *rules.Config) (netsetup.Result, error) {
	return a.sync(ns, cfg, true)
}

// Verify checks that ns holds exactly the nftables rules and routes of cfg; a difference wraps
// netsetup.ErrDrift and names the first one.
func (a *Applier) Verify(ctx context.Context, ns netsetup.Namespace, key string, cfg *rules.Config) (netsetup.Result, error) {
	return a.sync(ns, cfg, false)
}

func (a *Applier) sync(ns netsetup.Namespace, cfg *rules.Config, write bool) (netsetup.Result, error) {
	p, err := a.plan(cfg)
	if err != nil {
		return netsetup.Result{}, err
	}
	res := netsetup.Result{Hash: p.hash, Families: contract.FamiliesIPv4}
	if cfg.EnableIPv6 {
		res.Families = contract.FamiliesDual
	}
	err = ns.Do(func() error {
		nc, err := dial()
		if err != nil {
			return err
		}
		defer nc.Close()
		if write {
			reason, err := foreign(nc)
			if err != nil {
				return fmt.Errorf("look for iptables rules: %w", err)
			}
			if reason != "" {
				return &ForeignError{Reason: reason}
			}
		}
		changed, err := syncTables(nc, p.m, write)
		if err != nil {
			return err
		}
		routesChanged, err := netsetup.SyncRoutes(p.rs.Routes(), write)
		res.Changed = changed || routesChanged
		return err
	})
	if err != nil {
		return netsetup.Result{}, fmt.Errorf("network namespace %s: %w", ns.Path(), err)
	}
	return res, nil
}

// syncTables compares the live tables with the model's canonical form and, when they differ and
// write is set, replaces them in one batch and checks the result.
func syncTables(nc *conn, m *model, write bool) (bool, error) {
	want := m.state
	have, err := readState(nc)
	if err != nil {
		return false, err
	}
	ok, diff := want.Equal(have)
	if ok {
		return false, nil
	}
	if !write {
		return false, fmt.Errorf("%w: nftables: %s", netsetup.ErrDrift, diff)
	}
	live := map[string]bool{}
	for _, t := range have {
		live[t.Name] = true
	}
	if err := m.enc.write(nc, live); err != nil {
		return false, err
	}
	if have, err = readState(nc); err != nil {
		return true, err
	}
	if ok, diff := want.Equal(have); !ok {
		return true, fmt.Errorf("%w after the nftables batch: %s", netsetup.ErrDrift, diff)
	}
	return true, nil
}

// writeTables sends one atomic batch: each of our live tables is deleted (with its chains, rules
// and anonymous sets), and each table of the model is created with its chains, then its rules in
// their final order. Either all of it applies or none.
func writeTables(nc *conn, rs *Ruleset, live map[string]bool) error {
	enc, err := encode(rs)
	if err != nil {
		return err
	}
	return enc.write(nc, live)
}

// encoded is the batch messages that create a rule set's tables, by table: built once per rule set
// and cached with its canonical form (compiling and marshalling the expressions is most of the
// user-space work of an apply).
type encoded map[string][]netlink.Message

func encode(rs *Ruleset) (encoded, error) {
	b := &batch{}
	enc := encoded{}
	for _, name := range ourTables {
		t := rs.Table(name)
		if t == nil {
			continue
		}
		start := len(b.msgs)
		if err := b.addTable(name); err != nil {
			return nil, err
		}
		for _, c := range t.Chains {
			if err := b.addChain(name, c); err != nil {
				return nil, err
			}
		}
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				if err := b.addRule(name, c.Name, r); err != nil {
					return nil, err
				}
			}
		}
		enc[name] = b.msgs[start:len(b.msgs):len(b.msgs)]
	}
	return enc, nil
}

// write sends the batch that deletes the live tables of ours and creates enc's (the messages are
// copied: sending numbers them).
func (enc encoded) write(nc *conn, live map[string]bool) error {
	b := &batch{}
	for _, name := range ourTables {
		if live[name] {
			if err := b.delTable(name); err != nil {
				return err
			}
		}
		b.msgs = append(b.msgs, enc[name]...)
	}
	if err := b.send(nc); err != nil {
		return fmt.Errorf("nftables batch: %w", err)
	}
	return nil
}

// Programmed reports whether ns holds any of our tables.
func (a *Applier) Programmed(ctx context.Context, ns netsetup.Namespace, key string) (bool, error) {
	found := false
	err := ns.Do(func() error {
		nc, err := dial()
		if err != nil {
			return err
		}
		defer nc.Close()
		tables, err := dumpTables(nc)
		if err != nil {
			return fmt.Errorf("list inet tables: %w", err)
		}
		for _, t := range tables {
			found = found || slices.Contains(ourTables, t.name)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("network namespace %s: %w", ns.Path(), err)
	}
	return found, nil
}

package controller

import (
	"context"
	"fmt"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/nft"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// Rules backends (docs/nftables.md, "Selection"). The node's choice (--rules-backend) is for the
// pods it has not released; a released pod keeps the backend recorded in its annotations
// (contract.KeyBackend), so flipping the flag changes nothing for running pods: their drift
// checks and repairs use the backend they were released with.

// Backends is the controller's Applier when it programs with either rules backend. Used as an
// Applier itself it is the Default backend's; For returns the Applier of one pod's backend.
type Backends struct {
	// Default is the backend of the pods not released yet (--rules-backend).
	Default  contract.Backend
	IPTables Applier
	Nftables Applier
}

// backendChooser is an Applier that programs each pod with its own backend (Backends is one).
type backendChooser interface {
	Applier
	For(b contract.Backend) Applier
	DefaultBackend() contract.Backend
}

var _ backendChooser = Backends{}

// DefaultBackend returns the backend of the pods not released yet.
func (bs Backends) DefaultBackend() contract.Backend { return bs.Default }

// For returns the Applier that programs, checks and repairs a pod of backend b. Its Foreign also
// looks for the other backend's rules: a namespace holding them is not programmed (two rule sets
// would both be live).
func (bs Backends) For(b contract.Backend) Applier { return podBackend{bs: bs, b: b} }

// Apply, Verify, Programmed and Foreign are the Default backend's; Forget is both's.
func (bs Backends) Apply(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (netsetup.Result, error) {
	return bs.For(bs.Default).Apply(ctx, ns, key, cfg)
}

func (bs Backends) Verify(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (netsetup.Result, error) {
	return bs.For(bs.Default).Verify(ctx, ns, key, cfg)
}

func (bs Backends) Programmed(ctx context.Context, ns Namespace, key string) (bool, error) {
	return bs.For(bs.Default).Programmed(ctx, ns, key)
}

func (bs Backends) Foreign(ctx context.Context, ns Namespace, key string) (string, error) {
	return bs.For(bs.Default).Foreign(ctx, ns, key)
}

func (bs Backends) Forget(key string) {
	bs.IPTables.Forget(key)
	bs.Nftables.Forget(key)
}

// podBackend is the Applier of one backend within Backends.
type podBackend struct {
	bs Backends
	b  contract.Backend
}

func (p podBackend) own() Applier {
	if p.b == contract.BackendNftables {
		return p.bs.Nftables
	}
	return p.bs.IPTables
}

func (p podBackend) Apply(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (netsetup.Result, error) {
	return p.own().Apply(ctx, ns, key, cfg)
}

func (p podBackend) Verify(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (netsetup.Result, error) {
	return p.own().Verify(ctx, ns, key, cfg)
}

func (p podBackend) Programmed(ctx context.Context, ns Namespace, key string) (bool, error) {
	return p.own().Programmed(ctx, ns, key)
}

func (p podBackend) Forget(key string) { p.own().Forget(key) }

// Foreign is the backend's own check (iptables: ISTIO_* chains in the other iptables backend;
// nftables: any iptables rules, legacy tables read from /proc, never by running a save tool), and
// for iptables also the nftables backend's tables: the nftables check already covers every
// iptables rule, and an iptables save in the namespace could create the tables it lists.
func (p podBackend) Foreign(ctx context.Context, ns Namespace, key string) (string, error) {
	reason, err := p.own().Foreign(ctx, ns, key)
	if err != nil || reason != "" || p.b == contract.BackendNftables {
		return reason, err
	}
	programmed, err := p.bs.Nftables.Programmed(ctx, ns, key)
	if err != nil {
		return "", fmt.Errorf("look for the nftables backend's tables: %w", err)
	}
	if programmed {
		return fmt.Sprintf("network namespace %s already holds the nftables tables of Istio's native nftables rules (inet istio-proxy-*): "+
			"two rule sets would both be live (was the pod programmed with --rules-backend=nftables, or by istio-init with "+
			"values.global.nativeNftables?)", ns.Path()), nil
	}
	return "", nil
}

// rulesHash is the hash of cfg's rules in backend b: the iptables hash is the one every version
// wrote (pods released before the nftables backend existed keep matching it); the nftables hash
// is over Istio's nftables transaction and never equals an iptables one.
func rulesHash(b contract.Backend, cfg *rules.Config) (string, error) {
	if b == contract.BackendNftables {
		rs, err := nft.Generate(cfg)
		if err != nil {
			return "", err
		}
		return rs.Hash(), nil
	}
	rs, err := rules.Generate(cfg)
	if err != nil {
		return "", err
	}
	return rs.Hash(), nil
}

// defaultBackend is the backend of the pods not released yet.
func (c *Controller) defaultBackend() contract.Backend {
	if bs, ok := c.applier.(backendChooser); ok {
		return bs.DefaultBackend()
	}
	return contract.BackendIPTables
}

// backendOf returns the backend a pod with our annotations cur is worked on with: a ready pod's
// recorded one, else the node's default.
func (c *Controller) backendOf(cur annotations) (contract.Backend, error) {
	if cur.status() != contract.StatusReady {
		return c.defaultBackend(), nil
	}
	return contract.RecordedBackend(cur)
}

// applier returns the Applier of the pod's backend.
func (r *podRun) applier() Applier {
	if bs, ok := r.c.applier.(backendChooser); ok {
		return bs.For(r.backend)
	}
	return r.c.applier
}

// inspectBackend returns the backend inspect checks a pod with (as the controller would: a ready
// pod's recorded one, else the node's default), the LiveReader whose Verify and Programmed are
// that backend's, and the nftables backend's listing (nil when there is none), which Inspect uses
// instead of Live for an nftables pod.
func inspectBackend(ann annotations, live LiveReader) (contract.Backend, LiveReader, NftablesLister) {
	bs, ok := live.(Backends)
	if !ok {
		return contract.BackendIPTables, live, nil
	}
	b := bs.Default
	if ann.status() == contract.StatusReady {
		if rb, err := contract.RecordedBackend(ann); err == nil {
			b = rb
		}
	}
	lister, _ := bs.Nftables.(NftablesLister)
	return b, backendLive{Applier: bs.For(b), live: bs.IPTables}, lister
}

// backendLive is one backend's Verify and Programmed with the iptables rules listing of Live.
type backendLive struct {
	Applier
	live Applier
}

func (l backendLive) Live(ctx context.Context, ns Namespace, key string, families []rules.Family) (map[rules.Family]string, error) {
	lr, ok := l.live.(LiveReader)
	if !ok {
		return nil, fmt.Errorf("no iptables listing")
	}
	return lr.Live(ctx, ns, key, families)
}

// Live lists the iptables rules (see NetsetupApplier.Live).
func (bs Backends) Live(ctx context.Context, ns Namespace, key string, families []rules.Family) (map[rules.Family]string, error) {
	return backendLive{live: bs.IPTables}.Live(ctx, ns, key, families)
}

// Rules returns the --rules-backend choice. Call after Validate.
func (c *NodeConfig) Rules() contract.Backend {
	b, _ := contract.ParseBackend(c.RulesBackend)
	return b
}

// NodeBackends returns the node's Backends: iptables through ipt, nftables over netlink, and the
// --rules-backend choice for the pods not released yet.
func NodeBackends(c *NodeConfig, ipt *netsetup.Applier) Backends {
	return Backends{Default: c.Rules(), IPTables: NetsetupApplier{ipt}, Nftables: NftApplier{nft.NewApplier()}}
}

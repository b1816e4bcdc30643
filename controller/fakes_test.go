package controller

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// fakeNetns is a network namespace of the fakes: an identity, the IPs it holds, and the pods whose
// processes run in it (what the real finder's evidence, cgroups and CNI records, names).
type fakeNetns struct {
	id     contract.NetnsID
	ips    []netip.Addr
	owners []string // pod UIDs
}

func (n *fakeNetns) path() string { return fmt.Sprintf("/run/netns/fake-%d", n.id.Value) }

func (n *fakeNetns) holdsAny(ips []netip.Addr) bool {
	return slices.ContainsFunc(ips, func(a netip.Addr) bool { return slices.Contains(n.ips, a) })
}

// fakeFinder behaves like netns.Finder as far as the controller can tell. It resolves IPs
// node-wide: every namespace of the node holding one of the asked IPs is a candidate, whoever's it
// is. It returns only a candidate proven to be the asked pod's (the pod runs in it); a candidate
// of other pods only is ErrNotProven, the pod's own one also running another pod's processes is
// ErrShared, two of the pod's own are ErrAmbiguous, none at all ErrNotFound. Handles must be
// closed; every handle given out is recorded with the UID it was given for.
type fakeFinder struct {
	mu        sync.Mutex
	nets      []*fakeNetns // the node's namespaces
	err       error        // returned by Find when set
	open      int          // handles not closed
	finds     int
	forgotten []string
	given     []givenHandle
}

// givenHandle: Find(uid) returned namespace id.
type givenHandle struct {
	uid string
	id  contract.NetnsID
}

func newFakeFinder() *fakeFinder { return &fakeFinder{} }

// sandbox gives the pod a (new) namespace; its earlier namespace is gone (the kubelet re-created
// the sandbox).
func (f *fakeFinder) sandbox(uid string, cookie uint64, ips ...string) *fakeNetns {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nets = slices.DeleteFunc(f.nets, func(n *fakeNetns) bool { return slices.Equal(n.owners, []string{uid}) })
	n := &fakeNetns{id: contract.NetnsID{Kind: contract.KindCookie, Value: cookie}, owners: []string{uid}}
	for _, ip := range ips {
		n.ips = append(n.ips, netip.MustParseAddr(ip))
	}
	f.nets = append(f.nets, n)
	return n
}

// enter runs a process of pod uid in n (a privileged pod entering another's namespace).
func (f *fakeFinder) enter(n *fakeNetns, uid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n.owners = append(n.owners, uid)
}

func (f *fakeFinder) Find(_ context.Context, uid string, ips []netip.Addr) (Namespace, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finds++
	if f.err != nil {
		return nil, f.err
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("pod UID %q: no pod IPs given", uid)
	}
	var cands, proven []netns.Candidate
	var own []*fakeNetns
	for _, n := range f.nets {
		if !n.holdsAny(ips) {
			continue
		}
		c := netns.Candidate{Strategy: netns.StrategyProcUID, Path: n.path(), Inode: n.id.Value, Holds: n.ips}
		if slices.Contains(n.owners, uid) {
			c.UIDMatch = true
			proven = append(proven, c)
			own = append(own, n)
		} else {
			c.Why = fmt.Sprintf("its processes are pod UIDs %v", n.owners)
		}
		cands = append(cands, c)
	}
	switch {
	case len(cands) == 0:
		return nil, fmt.Errorf("%w: no namespace holds %v", netns.ErrNotFound, ips)
	case len(own) == 0:
		return nil, &netns.NotProvenError{PodUID: uid, PodIPs: ips, Candidates: cands}
	case len(own) > 1:
		return nil, &netns.AmbiguousError{PodUID: uid, PodIPs: ips, Candidates: proven, Resolution: "several are the pod's"}
	case len(own[0].owners) > 1:
		others := map[string][]int{}
		for _, o := range own[0].owners {
			if o != uid {
				others[o] = []int{1}
			}
		}
		return nil, &netns.SharedError{PodUID: uid, Candidate: proven[0], PodPIDs: []int{1}, Others: others}
	}
	f.open++
	f.given = append(f.given, givenHandle{uid: uid, id: own[0].id})
	return &fakeHandle{f: f, n: own[0]}, nil
}

func (f *fakeFinder) Forget(uid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgotten = append(f.forgotten, uid)
}

type fakeHandle struct {
	f      *fakeFinder
	n      *fakeNetns
	closed bool
}

func (h *fakeHandle) Do(fn func() error) error      { return fn() }
func (h *fakeHandle) Path() string                  { return h.n.path() }
func (h *fakeHandle) ID() (contract.NetnsID, error) { return h.n.id, nil }

// Addrs lists loopback, a link-local address and the namespace's IPs, as a pod's namespace has.
func (h *fakeHandle) Addrs() ([]netip.Addr, error) {
	out := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"), netip.MustParseAddr("fe80::1")}
	return append(out, h.n.ips...), nil
}

func (h *fakeHandle) Close() error {
	if !h.closed {
		h.closed = true
		h.f.mu.Lock()
		h.f.open--
		h.f.mu.Unlock()
	}
	return nil
}

// fakeApplier models what the controller relies on: per namespace, the rule set that is live (by
// hash, "" = none); Apply makes it the configuration's and reports whether it changed; Verify
// compares; rules in the other backend are a flag.
type fakeApplier struct {
	mu        sync.Mutex
	live      map[contract.NetnsID]string
	foreign   map[contract.NetnsID]bool
	applyErrs []error // returned by the next Apply calls, in order
	// entered and release, when set, make Apply signal entered and wait for release (drain tests).
	entered, release chan struct{}
	verifyErr        error
	calls            []string
	forgotten        []string
	// backend is the rules backend whose hash the fake reports ("" is iptables).
	backend contract.Backend
}

func newFakeApplier() *fakeApplier {
	return &fakeApplier{live: map[contract.NetnsID]string{}, foreign: map[contract.NetnsID]bool{}}
}

func hashOf(cfg *rules.Config) string {
	rs, err := rules.Generate(cfg)
	if err != nil {
		panic(err)
	}
	return rs.Hash()
}

// hash is cfg's rules hash in the fake's backend.
func (a *fakeApplier) hash(cfg *rules.Config) string {
	h, err := rulesHash(a.backend, cfg)
	if err != nil {
		panic(err)
	}
	return h
}

func (a *fakeApplier) call(op string, ns Namespace, extra string) contract.NetnsID {
	id, _ := ns.ID()
	a.calls = append(a.calls, fmt.Sprintf("%s %s%s", op, id, extra))
	return id
}

func (a *fakeApplier) Apply(_ context.Context, ns Namespace, key string, cfg *rules.Config) (netsetup.Result, error) {
	if a.entered != nil {
		a.entered <- struct{}{}
		<-a.release
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.hash(cfg)
	id := a.call("apply", ns, " "+h)
	if len(a.applyErrs) > 0 {
		err := a.applyErrs[0]
		a.applyErrs = a.applyErrs[1:]
		return netsetup.Result{}, err
	}
	changed := a.live[id] != h
	a.live[id] = h
	return netsetup.Result{Hash: h, Families: families(cfg), Changed: changed}, nil
}

func (a *fakeApplier) Verify(_ context.Context, ns Namespace, key string, cfg *rules.Config) (netsetup.Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.hash(cfg)
	id := a.call("verify", ns, " "+h)
	if a.verifyErr != nil {
		return netsetup.Result{}, a.verifyErr
	}
	if a.live[id] != h {
		return netsetup.Result{}, fmt.Errorf("network namespace %s: %w: live %q, want %q", ns.Path(), netsetup.ErrDrift, a.live[id], h)
	}
	return netsetup.Result{Hash: h, Families: families(cfg)}, nil
}

func (a *fakeApplier) Programmed(_ context.Context, ns Namespace, key string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := a.call("programmed", ns, "")
	return a.live[id] != "", nil
}

func (a *fakeApplier) Foreign(_ context.Context, ns Namespace, key string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := a.call("foreign", ns, "")
	if !a.foreign[id] {
		return "", nil
	}
	return fmt.Sprintf("network namespace %s already holds ISTIO_* chains in the other iptables backend: two rule sets would both be live "+
		"(is istio-init or Istio's CNI also programming this pod?)", ns.Path()), nil
}

func (a *fakeApplier) Forget(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.forgotten = append(a.forgotten, key)
}

// Live prints the live hash as if it were iptables-save output (for inspect).
func (a *fakeApplier) Live(_ context.Context, ns Namespace, key string, families []rules.Family) (map[rules.Family]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, _ := ns.ID()
	out := map[rules.Family]string{}
	for _, f := range families {
		out[f] = "# rules " + a.live[id] + "\n"
	}
	return out, nil
}

// NftablesLive lists the live hash as if it were the nftables backend's listing (for inspect):
// one table holding it, or the real listing's line for none, after its note without a
// configuration.
func (a *fakeApplier) NftablesLive(_ context.Context, ns Namespace, key string, cfg *rules.Config) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, _ := ns.ID()
	note := ""
	if cfg == nil {
		note = "# no valid configuration: no rule is compared with a rule set\n"
	}
	if a.live[id] == "" {
		return note + "# no tables of ours (inet istio-proxy-nat, istio-proxy-mangle, istio-proxy-raw)\n", nil
	}
	return note + "table inet istio-proxy-nat {\n\t# rules " + a.live[id] + "\n}\n", nil
}

// takeCalls returns and clears the recorded calls.
func (a *fakeApplier) takeCalls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.calls
	a.calls = nil
	return c
}

var (
	_ Finder         = (*fakeFinder)(nil)
	_ Applier        = (*fakeApplier)(nil)
	_ LiveReader     = (*fakeApplier)(nil)
	_ NftablesLister = (*fakeApplier)(nil)
)

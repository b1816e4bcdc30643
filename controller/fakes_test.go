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

// fakeNetns is a network namespace of the fakes: an identity and the IPs it holds.
type fakeNetns struct {
	id  contract.NetnsID
	ips []netip.Addr
}

func (n *fakeNetns) path() string { return fmt.Sprintf("/run/netns/fake-%d", n.id.Value) }

// fakeFinder finds namespaces the way netns.Finder does as far as the controller can tell: a
// namespace is found for a pod when it holds one of the pod's IPs, the handle must be closed, a
// cached handle (per UID) is returned until forgotten or until the IPs no longer match.
type fakeFinder struct {
	mu        sync.Mutex
	byUID     map[string]*fakeNetns // the namespace the "kubelet" made for each pod
	cache     map[string]*fakeNetns
	err       error // returned by Find when set
	open      int   // handles not closed
	finds     int
	forgotten []string
}

func newFakeFinder() *fakeFinder {
	return &fakeFinder{byUID: map[string]*fakeNetns{}, cache: map[string]*fakeNetns{}}
}

// sandbox gives the pod a (new) namespace.
func (f *fakeFinder) sandbox(uid string, cookie uint64, ips ...string) *fakeNetns {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := &fakeNetns{id: contract.NetnsID{Kind: contract.KindCookie, Value: cookie}}
	for _, ip := range ips {
		n.ips = append(n.ips, netip.MustParseAddr(ip))
	}
	f.byUID[uid] = n
	return n
}

func (f *fakeFinder) Find(_ context.Context, uid string, ips []netip.Addr) (Namespace, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finds++
	if f.err != nil {
		return nil, f.err
	}
	holds := func(n *fakeNetns) bool {
		return n != nil && slices.ContainsFunc(ips, func(a netip.Addr) bool { return slices.Contains(n.ips, a) })
	}
	n := f.cache[uid]
	if !holds(n) {
		n = f.byUID[uid]
		if !holds(n) {
			return nil, fmt.Errorf("%w: no namespace holds %v", netns.ErrNotFound, ips)
		}
		f.cache[uid] = n
	}
	f.open++
	return &fakeHandle{f: f, n: n}, nil
}

func (f *fakeFinder) Forget(uid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.cache, uid)
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
	h := hashOf(cfg)
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
	h := hashOf(cfg)
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

func (a *fakeApplier) ForeignRules(_ context.Context, ns Namespace, key string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := a.call("foreign", ns, "")
	return a.foreign[id], nil
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

// takeCalls returns and clears the recorded calls.
func (a *fakeApplier) takeCalls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.calls
	a.calls = nil
	return c
}

var (
	_ Finder     = (*fakeFinder)(nil)
	_ Applier    = (*fakeApplier)(nil)
	_ LiveReader = (*fakeApplier)(nil)
)

package controller

import (
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

// The tenant tests: whatever a tenant writes into its own pod X (annotations, and status.podIPs
// where it holds pods/status) never makes the controller touch the namespace of a victim pod V on
// the same node. The finder fake resolves IPs node-wide, as the real finder does, and like it
// returns only a namespace proven to be the asked pod's.

const (
	victimIP = "10.1.0.5"
	tenantIP = "10.1.0.7"
)

// releasedVictim is a fixture with the victim V released into its namespace (cookie 4097, IP
// victimIP) and the tenant's pod X (not released) in the API and the cache, X's own sandbox
// (cookie 7001, IP tenantIP) existing when ownSandbox.
func releasedVictim(t *testing.T, x *corev1.Pod, ownSandbox bool) (f *fixture, v *corev1.Pod) {
	t.Helper()
	v = meshPod("victim", victimIP)
	f = newFixture(t, v, x)
	f.finder.sandbox(string(v.UID), 4097, victimIP)
	if ownSandbox {
		f.finder.sandbox(string(x.UID), 7001, tenantIP)
	}
	f.mustSync(v)
	f.watch(v)
	if got := ours(f.server(v)).status(); got != contract.StatusReady {
		t.Fatalf("victim not released: %q", got)
	}
	f.takePatches()
	f.takeEvents()
	f.applier.takeCalls()
	return f, v
}

// expectUntouched checks that nothing was done in the victim's namespace for another pod and that
// its annotations are as released.
func expectUntouched(t *testing.T, f *fixture, v *corev1.Pod, released map[string]string) {
	t.Helper()
	for _, g := range f.finder.given {
		if g.id == cookie(4097) && g.uid != string(v.UID) {
			t.Fatalf("the victim's namespace was handed out for pod UID %s", g.uid)
		}
	}
	for _, c := range f.applier.takeCalls() {
		if strings.Contains(c, "cookie:4097") {
			t.Fatalf("the victim's namespace was worked on: %q", c)
		}
	}
	if got := ours(f.server(v)); !maps.Equal(got, released) {
		t.Fatalf("the victim's annotations changed:\n got %v\nwant %v", got, released)
	}
}

// forge sets the pod's status IPs (what a tenant with pods/status writes).
func forge(ips ...string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Status.PodIP, p.Status.PodIPs = ips[0], nil
		for _, ip := range ips {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
		}
	}
}

func TestTenantPodWithVictimsIP(t *testing.T) {
	modes := map[string]func(*corev1.Pod){
		"NONE":     annotate(istioapi.AnnotationInterceptionMode, "NONE"),
		"REDIRECT": annotate(istioapi.AnnotationInterceptionMode, "REDIRECT"),
	}
	for mode, m := range modes {
		for _, own := range []bool{false, true} {
			name := mode + "/no own sandbox"
			if own {
				name = mode + "/own sandbox elsewhere"
			}
			t.Run(name, func(t *testing.T) {
				x := meshPod("tenant", victimIP, m)
				f, v := releasedVictim(t, x, own)
				released := ours(f.server(v))
				for range 5 { // the tenant keeps it up; the retries find the same
					if err := f.sync(x); err == nil {
						t.Fatal("the tenant's pod was reconciled without error")
					}
					f.watch(x)
				}
				expectUntouched(t, f, v, released)
				got := ours(f.server(x))
				if got.status() != contract.StatusPending || !strings.Contains(got[contract.KeyReason], "not proven to be the pod's") ||
					!strings.Contains(got[contract.KeyReason], "pod UIDs ["+string(v.UID)+"]") {
					t.Fatalf("tenant pod: %v, want pending with a reason saying the namespace is not proven to be its", got)
				}
				f.expectEvents("Warning Pending: not proven to be the pod's") // once, not per retry
				if v := metricValue(t, f.c.metrics.Errors, "reason", reasonNotProven); v != 5 {
					t.Fatalf("errors_total{%s} = %v, want 5", reasonNotProven, v)
				}
			})
		}
	}

	t.Run("own and victim's IPs: only its own namespace, with its own addresses", func(t *testing.T) {
		// The API's first IP is IPv6 (IPv6 rules, as Istio decides it); the namespace holds only IPv4.
		x := meshPod("tenant", victimIP, forge("fd00::7", victimIP, tenantIP))
		f, v := releasedVictim(t, x, true)
		released := ours(f.server(v))
		f.mustSync(x)
		expectUntouched(t, f, v, released)
		_, own := specOf(t, meshPod("tenant", tenantIP))
		got := ours(f.server(x))
		if got.status() != contract.StatusReady || got[contract.KeyNetns] != "cookie:7001" || got[contract.KeyRules] != own ||
			got[contract.KeyFamilies] != contract.FamiliesIPv4 {
			t.Fatalf("tenant pod: %v, want released into its own namespace cookie:7001 with the IPv4 rules %s of its own address", got, own)
		}
	})

	t.Run("released tenant pod moved to the victim's IP", func(t *testing.T) {
		x := meshPod("tenant", tenantIP)
		f, v := releasedVictim(t, x, true)
		f.mustSync(x)
		f.watch(x)
		f.takePatches()
		f.takeEvents()
		released, tenantReleased := ours(f.server(v)), ours(f.server(x))
		for range 3 {
			moved, _ := f.update(x, forge(victimIP))
			if err := f.sync(moved); err == nil {
				t.Fatal("no error")
			}
		}
		expectUntouched(t, f, v, released)
		if got := ours(f.server(x)); !maps.Equal(got, tenantReleased) {
			t.Fatalf("the released tenant pod's annotations changed: %v", got)
		}
		f.expectNoPatch()
		f.expectEvents("Warning CheckFailed: not proven to be the pod's")
	})
}

// TestIPChangeIsNoNewSandbox: a released pod whose status IP changes, with no new namespace
// proven to be its own, is not re-programmed anywhere; a new namespace proven to be its own is.
func TestIPChangeIsNoNewSandbox(t *testing.T) {
	x := meshPod("tenant", tenantIP)
	f, v := releasedVictim(t, x, true)
	released := ours(f.server(v))
	for _, ip := range []string{"10.1.0.99", tenantIP} { // nobody's, the tenant's
		moved, _ := f.update(v, forge(ip))
		if err := f.sync(moved); err == nil {
			t.Fatalf("IP %s: no error", ip)
		}
		if calls := f.applier.takeCalls(); len(calls) != 0 {
			t.Fatalf("IP %s: applier calls %q", ip, calls)
		}
		f.expectNoPatch()
		if got := ours(f.server(v)); !maps.Equal(got, released) {
			t.Fatalf("IP %s: annotations changed: %v", ip, got)
		}
	}
	f.expectEvents("Warning CheckFailed: not found", "Warning CheckFailed: not proven to be the pod's")
	for _, g := range f.finder.given {
		if g.id == cookie(7001) {
			t.Fatal("the tenant's namespace was handed out")
		}
	}
}

// TestClaimedNamespace: a namespace a released pod holds is refused to any other pod, even when
// the finder proves it to be the other's (the victim's processes gone, the tenant's in it); the
// claim survives a controller restart and is dropped when the holder is deleted.
func TestClaimedNamespace(t *testing.T) {
	x := meshPod("tenant", victimIP)
	f, v := releasedVictim(t, x, false)
	released := ours(f.server(v))
	f.finder.nets[0].owners = []string{string(x.UID)} // only the tenant's processes in it now
	check := func(f *fixture) {
		t.Helper()
		if err := f.sync(x); err == nil {
			t.Fatal("the tenant's pod was reconciled without error")
		}
		f.watch(x)
		for _, c := range f.applier.takeCalls() {
			if strings.Contains(c, "cookie:4097") {
				t.Fatalf("the claimed namespace was worked on: %q", c)
			}
		}
		if got := ours(f.server(v)); !maps.Equal(got, released) {
			t.Fatalf("the victim's annotations changed: %v", got)
		}
		got := ours(f.server(x))
		if got.status() != contract.StatusPending || !strings.Contains(got[contract.KeyReason], "is pod app/victim (UID "+string(v.UID)+")'s") {
			t.Fatalf("tenant pod: %v, want pending naming the victim", got)
		}
	}
	check(f)

	// A new controller over the same API server and node: the claim is rebuilt before any reconcile.
	list, err := f.client.Tracker().List(corev1.SchemeGroupVersion.WithResource("pods"), corev1.SchemeGroupVersion.WithKind("Pod"), testNS)
	if err != nil {
		t.Fatal(err)
	}
	var pods []*corev1.Pod
	for _, o := range list.(*corev1.PodList).Items {
		pods = append(pods, o.DeepCopy())
	}
	f2 := newFixtureOver(t, f.ctx, f.client, f.finder, f.applier, pods...)
	if err := f2.c.rebuildClaims(f2.ctx); err != nil {
		t.Fatal(err)
	}
	if o, ok := f2.c.claims.owner("cookie:4097"); !ok || o.uid != v.UID {
		t.Fatalf("claim after restart: %v %v, want the victim's", o, ok)
	}
	f2.client.ClearActions()
	check(f2)

	// The victim is deleted: its claim goes; the namespace, now proven the tenant's, is programmed.
	if err := f2.informer.GetIndexer().Delete(v); err != nil {
		t.Fatal(err)
	}
	f2.mustSync(v)
	if f2.c.claims.len() != 0 {
		t.Fatalf("claims after the holder's deletion: %d", f2.c.claims.len())
	}
	f2.mustSync(x)
	if got := ours(f2.server(x)); got.status() != contract.StatusReady || got[contract.KeyNetns] != "cookie:4097" {
		t.Fatalf("tenant pod after the victim's deletion: %v", got)
	}
	if o, _ := f2.c.claims.owner("cookie:4097"); o.uid != x.UID {
		t.Fatalf("claim: %v, want the tenant's", o)
	}
}

// TestSharedNamespaceRefused: a privileged pod that entered the victim's namespace makes it
// shared: refused to both pods, nothing done in it, the victim's annotations kept.
func TestSharedNamespaceRefused(t *testing.T) {
	x := meshPod("tenant", victimIP)
	f, v := releasedVictim(t, x, false)
	released := ours(f.server(v))
	f.finder.enter(f.finder.nets[0], string(x.UID))
	f.c.driftRound(f.ctx) // the victim is checked again
	for _, p := range []*corev1.Pod{v, x} {
		if err := f.sync(p); err == nil {
			t.Fatalf("%s: no error", p.Name)
		}
	}
	if calls := f.applier.takeCalls(); len(calls) != 0 {
		t.Fatalf("applier calls %q", calls)
	}
	if got := ours(f.server(v)); !maps.Equal(got, released) {
		t.Fatalf("victim's annotations changed: %v", got)
	}
	if got := ours(f.server(x)); got.status() != contract.StatusPending || !strings.Contains(got[contract.KeyReason], "shared with another pod") {
		t.Fatalf("tenant pod: %v", got)
	}
	f.expectEvents("Warning CheckFailed: shared with another pod", "Warning Pending: shared with another pod")
}

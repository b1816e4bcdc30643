package controller

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// withBackends makes f's controller program with both backends, default def: f.applier is the
// iptables backend, the returned fake the nftables one.
func withBackends(f *fixture, def contract.Backend) *fakeApplier {
	nf := newFakeApplier()
	nf.backend = contract.BackendNftables
	f.c.applier = Backends{Default: def, IPTables: f.applier, Nftables: nf}
	return nf
}

// nftReadyPatch is the exact merge patch that releases a pod programmed with nftables.
func nftReadyPatch(netnsID, hash, families string) string {
	return strings.Replace(readyPatch(netnsID, hash, families), `"pod-network-controller.istio.io/backend":null`,
		`"pod-network-controller.istio.io/backend":"nftables"`, 1)
}

func hashIn(t *testing.T, b contract.Backend, pod *corev1.Pod) string {
	t.Helper()
	cfg, _ := specOf(t, pod)
	h, err := rulesHash(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func expectCalls(t *testing.T, a *fakeApplier, what string, want ...string) {
	t.Helper()
	if calls := a.takeCalls(); !slices.Equal(calls, want) {
		t.Fatalf("%s calls %q, want %q", what, calls, want)
	}
}

// TestNewPodGetsTheDefaultBackend: with --rules-backend=nftables a new pod is checked for iptables
// rules, programmed over nftables and released with the nftables hash and the backend recorded;
// the iptables backend is not called.
func TestNewPodGetsTheDefaultBackend(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	f := newSandboxed(t, pod)
	nf := withBackends(f, contract.BackendNftables)
	h := hashIn(t, contract.BackendNftables, pod)
	if ipt := hashIn(t, contract.BackendIPTables, pod); h == ipt {
		t.Fatalf("nftables hash %s equals the iptables one", h)
	}
	f.mustSync(pod)
	f.expectPatch(pod, nftReadyPatch("cookie:4097", h, "ipv4"))
	expectCalls(t, nf, "nftables", "foreign cookie:4097", "apply cookie:4097 "+h)
	expectCalls(t, f.applier, "iptables")

	// Released: its drift check is nftables's, also with the flag back on iptables.
	synced, _ := f.watch(pod)
	f.c.applier = Backends{Default: contract.BackendIPTables, IPTables: f.applier, Nftables: nf}
	f.c.driftRound(f.ctx)
	f.mustSync(synced)
	expectCalls(t, nf, "nftables", "verify cookie:4097 "+h)
	expectCalls(t, f.applier, "iptables")
	f.expectNoPatch()
}

// TestReleasedIPTablesPodKeepsIPTables: a pod released by an earlier version (no backend
// annotation) keeps its iptables hash and is verified and repaired with iptables after the flag
// flipped to nftables; its annotations do not change.
func TestReleasedIPTablesPodKeepsIPTables(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	cfg, hash := specOf(t, pod)
	annotate(contract.KeyStatus, "ready", contract.KeyNetns, "cookie:4097", contract.KeyRules, hash, contract.KeyFamilies, "ipv4")(pod)
	f := newSandboxed(t, pod)
	nf := withBackends(f, contract.BackendNftables)
	f.applier.live[cookie(4097)] = hashOf(cfg)

	f.mustSync(pod)
	expectCalls(t, f.applier, "iptables", "verify cookie:4097 "+hash)
	expectCalls(t, nf, "nftables")
	f.expectNoPatch()

	f.applier.live[cookie(4097)] = "flushed"
	f.c.driftRound(f.ctx)
	f.mustSync(pod)
	expectCalls(t, f.applier, "iptables", "verify cookie:4097 "+hash, "apply cookie:4097 "+hash)
	expectCalls(t, nf, "nftables")
	f.expectNoPatch() // the same annotations: no backend key for iptables
	f.expectEvents("Warning DriftRepaired: Rules in network namespace cookie:4097 had drifted: restored the released rule set " + hash +
		` (network namespace /run/netns/fake-4097: live rules differ from the expected rules: live "flushed", want "` + hash + `")`)
}

// TestOtherBackendsRulesRefused: before programming, the other backend's rules are looked for;
// a namespace holding them is refused with the reason in the pod's status.
func TestOtherBackendsRulesRefused(t *testing.T) {
	t.Run("nftables tables, programming iptables", func(t *testing.T) {
		pod := meshPod("web", "10.1.0.5")
		f := newSandboxed(t, pod)
		nf := withBackends(f, contract.BackendIPTables)
		nf.live[cookie(4097)] = "some nftables rules"
		f.mustSync(pod)
		reason := "network namespace /run/netns/fake-4097 already holds the nftables tables of Istio's native nftables rules (inet istio-proxy-*): " +
			"two rule sets would both be live (was the pod programmed with --rules-backend=nftables, or by istio-init with values.global.nativeNftables?)"
		f.expectPatch(pod, statusPatch(contract.StatusFailed, reason))
		f.expectEvents("Warning ForeignRules: " + reason)
		expectCalls(t, f.applier, "iptables", "foreign cookie:4097")
		expectCalls(t, nf, "nftables", "programmed cookie:4097")
	})
	t.Run("iptables rules, programming nftables", func(t *testing.T) {
		pod := meshPod("web", "10.1.0.5")
		f := newSandboxed(t, pod)
		nf := withBackends(f, contract.BackendNftables)
		nf.foreign[cookie(4097)] = true
		f.mustSync(pod)
		if p := f.takePatches(); len(p) != 1 || !strings.Contains(p[0].data, `status":"failed"`) || !strings.Contains(p[0].data, "two rule sets would both be live") {
			t.Fatalf("patches %+v, want failed with the reason", p)
		}
		expectCalls(t, nf, "nftables", "foreign cookie:4097")
		expectCalls(t, f.applier, "iptables")
	})
	// The nftables backend looks for iptables rules inside Apply (NftApplier.Apply): its
	// *ForeignRulesError is the same refusal, not an error to retry.
	t.Run("iptables rules found by the nftables Apply", func(t *testing.T) {
		pod := meshPod("web", "10.1.0.5")
		f := newSandboxed(t, pod)
		nf := withBackends(f, contract.BackendNftables)
		reason := "network namespace /run/netns/fake-4097: legacy ip table nat (two rule sets would both be live)"
		nf.applyErrs = []error{fmt.Errorf("wrapped: %w", &ForeignRulesError{Reason: reason})}
		f.mustSync(pod)
		f.expectPatch(pod, statusPatch(contract.StatusFailed, reason))
		f.expectEvents("Warning ForeignRules: " + reason)
		expectCalls(t, nf, "nftables", "foreign cookie:4097", "apply cookie:4097 "+hashIn(t, contract.BackendNftables, pod))
	})
}

// TestBadRecordedBackend: a released pod whose backend annotation is not one the controller
// writes is not touched (no check, no repair, no patch) and is retried with the reason.
func TestBadRecordedBackend(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	_, hash := specOf(t, pod)
	annotate(contract.KeyStatus, "ready", contract.KeyNetns, "cookie:4097", contract.KeyRules, hash, contract.KeyFamilies, "ipv4",
		contract.KeyBackend, "iptables")(pod)
	f := newSandboxed(t, pod)
	nf := withBackends(f, contract.BackendNftables)
	err := f.sync(pod)
	if err == nil || !strings.Contains(err.Error(), `annotation pod-network-controller.istio.io/backend="iptables": want nftables`) {
		t.Fatalf("sync: %v, want the annotation named", err)
	}
	expectCalls(t, f.applier, "iptables")
	expectCalls(t, nf, "nftables")
	f.expectNoPatch()
}

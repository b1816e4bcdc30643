package netsetup

// The Applier on a fake node (no root): sync, drift, the failure paths of restore, the xtables
// lock, backend detection and foreign-rule detection. The same paths run for real, as root, in
// apply_linux_test.go; the fake itself is checked against the real tools by package iptablestest.

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/iptablestest"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

var fakeConfigs = map[string]func(bool) *rules.Config{"redirect": redirectConfig, "tproxy": tproxyConfig}

func TestFakeApplyIdempotentVerifiedAndLeavesOthersAlone(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends {
		for name, mk := range fakeConfigs {
			for _, ipv6 := range []bool{false, true} {
				t.Run(string(b)+"/"+name+"/ipv6="+map[bool]string{false: "no", true: "yes"}[ipv6], func(t *testing.T) {
					n := newFakeNode()
					a := n.applier(t, b)
					pod := n.NewNamespace("pod")
					if err := pod.Restore(string(b), rules.IPv4, someoneElse); err != nil {
						t.Fatal(err)
					}
					cfg := mk(ipv6)
					res, err := a.Apply(ctx, pod, "pod-a", cfg)
					if err != nil {
						t.Fatal(err)
					}
					if !res.Changed || res.Hash == "" {
						t.Fatalf("first apply: %+v", res)
					}
					if _, err := a.Verify(ctx, pod, "pod-a", cfg); err != nil {
						t.Fatalf("verify after apply: %v", err)
					}
					before, restores := saves(pod, b), n.restores()
					res2, err := a.Apply(ctx, pod, "pod-a", cfg)
					if err != nil {
						t.Fatal(err)
					}
					if res2.Changed || res2.Hash != res.Hash || n.restores() != restores {
						t.Fatalf("second apply changed something: %+v then %+v, restores %d then %d", res, res2, restores, n.restores())
					}
					after := saves(pod, b)
					if stripDates(after) != stripDates(before) {
						t.Fatalf("re-apply changed the tables:\n%s\n%s", before, after)
					}
					for _, theirs := range []string{":KUBE-SOMETHING - [0:0]", "-A OUTPUT -d 10.0.0.1/32 -j KUBE-SOMETHING", "-A KUBE-SOMETHING -p tcp -m tcp --dport 80 -j RETURN"} {
						if !strings.Contains(after, theirs) {
							t.Errorf("someone else's %q is gone:\n%s", theirs, after)
						}
					}
					if want := "ISTIO_INBOUND"; !slices.Contains(ourChains(after, "nat"), want) && !slices.Contains(ourChains(after, "mangle"), want) {
						t.Errorf("no %s after apply:\n%s", want, after)
					}
				})
			}
		}
	}
}

func stripDates(s string) string { return counters.ReplaceAllString(s, "") }

// TestFakeApplySwitchesConfiguration: from REDIRECT to TPROXY and back in one restore per family;
// the old configuration then fails Verify with ErrDrift, and no chain of the old one stays.
func TestFakeApplySwitchesConfiguration(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends {
		n := newFakeNode()
		a := n.applier(t, b)
		pod := n.NewNamespace("pod")
		for _, cfg := range []*rules.Config{redirectConfig(true), tproxyConfig(true), redirectConfig(true)} {
			if _, err := a.Apply(ctx, pod, "pod-a", cfg); err != nil {
				t.Fatalf("%s: apply %s: %v", b, cfg.InterceptionMode, err)
			}
		}
		if _, err := a.Verify(ctx, pod, "pod-a", tproxyConfig(true)); !errors.Is(err, ErrDrift) {
			t.Fatalf("%s: verify of the replaced configuration: %v", b, err)
		}
		for _, f := range []rules.Family{rules.IPv4, rules.IPv6} {
			if got := ourChains(pod.Save(string(b), f), "mangle"); len(got) > 0 {
				t.Errorf("%s %s: TPROXY chains left in mangle: %v", b, f, got)
			}
		}
		if _, err := a.Verify(ctx, pod, "pod-a", redirectConfig(true)); err != nil {
			t.Errorf("%s: verify after switching back: %v", b, err)
		}
	}
}

// TestFakeVerifyReportsDriftAndApplyRepairs: a rule of ours deleted by someone else is ErrDrift
// naming the chain; Apply puts it back.
func TestFakeVerifyReportsDriftAndApplyRepairs(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode()
	a := n.applier(t, BackendNFT)
	pod := n.NewNamespace("pod")
	cfg := redirectConfig(false)
	if _, err := a.Apply(ctx, pod, "pod-a", cfg); err != nil {
		t.Fatal(err)
	}
	if err := pod.Restore("nft", rules.IPv4, "*nat\n-D ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n"); err != nil {
		t.Fatal(err)
	}
	_, err := a.Verify(ctx, pod, "pod-a", cfg)
	if !errors.Is(err, ErrDrift) || !strings.Contains(err.Error(), "ISTIO_REDIRECT") || !strings.Contains(err.Error(), "fake:pod") {
		t.Fatalf("verify after a deleted rule: %v", err)
	}
	if res, err := a.Apply(ctx, pod, "pod-a", cfg); err != nil || !res.Changed {
		t.Fatalf("repair: %+v %v", res, err)
	}
	if _, err := a.Verify(ctx, pod, "pod-a", cfg); err != nil {
		t.Fatalf("verify after repair: %v", err)
	}
}

// TestFakeRestoreFailsHalfWay: another writer deletes one of our rules between the probe and the
// restore, so the restore's "-D" of it fails after the lines that flush and re-declare our chains:
// nothing of that table is applied, and the error is the tool's with the failing line. In a
// two-table transaction the first table (mangle, sorted first) stays committed, as with the real
// tool, and Verify reports the drift. The next Apply converges.
func TestFakeRestoreFailsHalfWay(t *testing.T) {
	ctx := context.Background()
	unhook := func(b Backend, pod *iptablestest.Namespace) func(ns *iptablestest.Namespace) {
		done := false
		return func(ns *iptablestest.Namespace) {
			if ns == pod && !done {
				done = true
				mustRestore(t, ns, string(b), "*nat\n-D OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n")
			}
		}
	}
	fewerPorts := redirectConfig(false)
	fewerPorts.InboundPortsExclude = []uint16{15020}
	for _, b := range backends {
		for _, next := range []*rules.Config{fewerPorts, tproxyConfig(false)} {
			n := newFakeNode()
			a := n.applier(t, b)
			pod := n.NewNamespace("pod")
			if _, err := a.Apply(ctx, pod, "pod-a", redirectConfig(false)); err != nil {
				t.Fatal(err)
			}
			n.BeforeRestore = unhook(b, pod)
			_, err := a.Apply(ctx, pod, "pod-a", next)
			var exec *ExecError
			if !errors.As(err, &exec) || exec.Code != 1 || !strings.Contains(err.Error(), `(failing input: "-D OUTPUT -j ISTIO_OUTPUT")`) ||
				!strings.Contains(err.Error(), "network namespace fake:pod") {
				t.Fatalf("%s: apply racing a writer: %v", b, err)
			}
			save := pod.Save(string(b), rules.IPv4)
			if !strings.Contains(save, "-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN") {
				t.Fatalf("%s: the failed nat transaction was partly applied:\n%s", b, save)
			}
			if tproxy := next.InterceptionMode == rules.ModeTProxy; tproxy != (len(ourChains(save, "mangle")) > 0) {
				t.Fatalf("%s: mangle committed=%t, want %t:\n%s", b, !tproxy, tproxy, save)
			}
			if _, err := a.Verify(ctx, pod, "pod-a", next); !errors.Is(err, ErrDrift) {
				t.Fatalf("%s: verify after the failed apply: %v", b, err)
			}
			if _, err := a.Apply(ctx, pod, "pod-a", next); err != nil {
				t.Fatalf("%s: apply after the race: %v", b, err)
			}
			if _, err := a.Verify(ctx, pod, "pod-a", next); err != nil {
				t.Fatalf("%s: verify after the second apply: %v", b, err)
			}
		}
	}
}

// TestFakeCanonicalFormFails: when the scratch round trip fails (the kernel lacks TPROXY), Apply
// says so and never runs a restore in the pod.
func TestFakeCanonicalFormFails(t *testing.T) {
	n := newFakeNode()
	a := n.applier(t, BackendNFT)
	pod := n.NewNamespace("pod")
	n.RemoveTarget("TPROXY")
	_, err := a.Apply(context.Background(), pod, "pod-a", tproxyConfig(false))
	if err == nil || !strings.Contains(err.Error(), "canonical form of the ipv4 rules (scratch namespace)") ||
		!strings.Contains(err.Error(), "Couldn't load target `TPROXY'") {
		t.Fatalf("apply without TPROXY: %v", err)
	}
	for _, call := range n.Calls() {
		if call.Namespace == "pod" {
			t.Errorf("ran %s in the pod", call.Name)
		}
	}
}

// TestFakeReadBackDiffers: another writer changes our rules between the restore and the read-back:
// Apply fails with ErrDrift "after restore" instead of reporting success.
func TestFakeReadBackDiffers(t *testing.T) {
	n := newFakeNode()
	a := n.applier(t, BackendNFT)
	pod := n.NewNamespace("pod")
	n.AfterRestore = func(ns *iptablestest.Namespace) {
		if ns == pod {
			_ = ns.Restore("nft", rules.IPv4, "*nat\n-I ISTIO_OUTPUT 1 -j RETURN\nCOMMIT\n")
		}
	}
	_, err := a.Apply(context.Background(), pod, "pod-a", redirectConfig(false))
	if !errors.Is(err, ErrDrift) || !strings.Contains(err.Error(), "after restore") || !strings.Contains(err.Error(), "ISTIO_OUTPUT") {
		t.Fatalf("apply with a concurrent writer: %v", err)
	}
}

// TestFakeLockHeld: with the pod's xtables lock held by someone else, legacy restore gives up
// (ErrLocked, transient) and nothing is applied; nft does not use the lock.
func TestFakeLockHeld(t *testing.T) {
	for _, b := range backends {
		n := newFakeNode()
		n.LockWait = 50 * time.Millisecond
		a := n.applier(t, b)
		pod := n.NewNamespace("pod")
		held, err := os.OpenFile(a.LockFile("pod-a"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(held.Fd()), unix.LOCK_EX); err != nil {
			t.Fatal(err)
		}
		_, err = a.Apply(context.Background(), pod, "pod-a", redirectConfig(false))
		held.Close()
		switch b {
		case BackendLegacy:
			if !errors.Is(err, ErrLocked) {
				t.Fatalf("legacy apply under a held lock: %v", err)
			}
			if got := ourChains(pod.Save("legacy", rules.IPv4), "nat"); len(got) > 0 {
				t.Fatalf("legacy apply under a held lock changed the tables: %v", got)
			}
		default:
			if err != nil {
				t.Fatalf("nft apply under a held xtables lock: %v", err)
			}
		}
	}
}

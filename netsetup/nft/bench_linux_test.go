package nft

import (
	"bytes"
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// The benchmarks program fresh namespaces with the typical pod configuration (REDIRECT, IPv4,
// rules.Default) and report the median and 90th percentile per pod:
//
//	go test -run '^$' -bench Nft -benchtime 200x ./netsetup/nft/
//
// Namespace creation is not timed; opening it is.

// BenchmarkNftApply: the whole nftables apply per pod, as the controller makes it: open the
// namespace, enter it, open the netfilter socket, the probe for iptables rules (legacy tables in
// /proc, iptables-nft chains in one chain dump), read our tables (none), one batch, read back and
// compare with the model's canonical form (cached: computed once per configuration), the routes
// (for REDIRECT IPv4: the proof that no TPROXY policy rule is left, one rule dump), leave.
func BenchmarkNftApply(b *testing.B) {
	a := warmApplier(b)
	testutil.PerPod(b, nil, applyTypical(a))
}

// applyTypical is the timed operation: open the pod's namespace and apply the typical configuration.
func applyTypical(a *Applier) func(n *testutil.Netns) error {
	cfg := rules.Default()
	return func(n *testutil.Netns) error {
		h, err := netns.Open(n.Path)
		if err != nil {
			return err
		}
		defer h.Close()
		_, err = a.Apply(context.Background(), h, "bench", cfg)
		return err
	}
}

// warmApplier returns an Applier that has programmed the typical configuration once (its
// canonical form is cached, as on a node after the first pod).
func warmApplier(b *testing.B) *Applier {
	testutil.RequireRoot(b)
	a := NewApplier()
	if err := applyTypical(a)(testutil.NewNetns(b)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	return a
}

// BenchmarkNftApply50Parallel: 50 pods at once (a node's burst), each a whole apply.
func BenchmarkNftApply50Parallel(b *testing.B) {
	a := warmApplier(b)
	testutil.Burst(b, 50, applyTypical(a))
}

// BenchmarkNftApplyUnchanged: re-applying to a namespace that already holds the rules (the drift
// check: read back, compare, write nothing).
func BenchmarkNftApplyUnchanged(b *testing.B) {
	testutil.RequireRoot(b)
	a, cfg := NewApplier(), rules.Default()
	ctx := context.Background()
	h := openNS(b, testutil.NewNetns(b))
	if _, err := a.Apply(ctx, h, "bench", cfg); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	samples := make([]time.Duration, 0, b.N)
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if res, err := a.Apply(ctx, h, "bench", cfg); err != nil || res.Changed {
			b.Fatalf("changed=%v err=%v", res.Changed, err)
		}
		samples = append(samples, time.Since(start))
	}
	testutil.ReportPercentiles(b, samples)
}

// BenchmarkNftExecText: the same rules as Istio applies them, its transaction text piped to one
// `nft -f -` exec (nft binary needed; skipped without it). Istio's istio-init adds pilot-agent's
// start and its own probing on top (BenchmarkNftIstioNative).
func BenchmarkNftExecText(b *testing.B) {
	requireNft(b)
	rs, err := Generate(rules.Default())
	if err != nil {
		b.Fatal(err)
	}
	text := []byte(rs.Text())
	testutil.PerPod(b, nil, func(n *testutil.Netns) error {
		cmd := exec.Command("ip", "netns", "exec", n.Name, "nft", "-f", "-")
		cmd.Stdin = bytes.NewReader(text)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("nft -f: %v\n%s", err, out)
		}
		return nil
	})
}

// BenchmarkNftIstioNative: Istio's own `pilot-agent istio-iptables --native-nftables` (what
// istio-init runs with values.global.nativeNftables=true), same configuration. Build it with
// `test/tools/build.sh pilot-agent`; it is looked for in PILOT_AGENT or the tools cache and the
// benchmark is skipped without it. Timed through `ip netns exec` (the namespace switch included).
func BenchmarkNftIstioNative(b *testing.B) { istioIptables(b, true) }

// istioIptables times Istio's istio-init command for the typical pod per fresh namespace: its
// native nftables path, or its iptables path (the node's iptables backend, as istio-init picks it).
func istioIptables(b *testing.B, native bool) {
	agent := pilotAgent(b)
	args := []string{"netns", "exec", "", agent, "istio-iptables", "-p", "15001", "-z", "15006",
		"-u", "1337", "-g", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15020,15021,15090",
		"-o", "15020", "--log_output_level", "default:error"}
	if native {
		args = append(args, "--native-nftables")
	}
	podIP := func(n *testutil.Netns) { withPodIP(b, n, false) }
	testutil.PerPod(b, podIP, func(n *testutil.Netns) error {
		args[2] = n.Name
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			b.Fatalf("pilot-agent: %v\n%s", err, out)
		}
		return nil
	})
}

// BenchmarkPerPod: the four ways to program the typical pod (REDIRECT, IPv4, rules.Default) side
// by side in one run, each per fresh namespace (created untimed), p50 and p90 per pod:
//
//	go test -run '^$' -bench PerPod -benchtime 200x ./netsetup/nft/
//
// nftables is our whole nftables apply (BenchmarkNftApply). Inside its timer: open the namespace's
// file, generate the rule set and its hash, look up its cached canonical form and encoded batch,
// enter the namespace on a locked thread, open one netfilter netlink socket, look for iptables
// rules (ip_tables_names and ip6_tables_names in /proc, one chain dump of every family: the
// controller makes no other entry for it), dump our tables (none), send the one batch, read the
// tables back (tables, chains and rules dumps) and compare them with the canonical form, check
// the routes (one rule dump: no TPROXY rule left), leave the namespace.
// iptables is our iptables apply (netsetup.Applier, the node's backend: probe, one
// iptables-restore, read-back verify, routes). istio-native-nftables and istio-iptables are
// Istio's `pilot-agent istio-iptables` with and without --native-nftables, through `ip netns exec`
// (skipped without pilot-agent).
func BenchmarkPerPod(b *testing.B) {
	b.Run("nftables", BenchmarkNftApply)
	b.Run("iptables", func(b *testing.B) {
		testutil.RequireRoot(b)
		a, err := netsetup.NewApplier(context.Background(), netsetup.Options{LockDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		apply := func(n *testutil.Netns) error {
			h, err := netns.Open(n.Path)
			if err != nil {
				return err
			}
			defer h.Close()
			_, err = a.Apply(context.Background(), h, "bench", rules.Default())
			return err
		}
		if err := apply(testutil.NewNetns(b)); err != nil { // its canonical form cached, as on a node
			b.Fatal(err)
		}
		b.ResetTimer()
		testutil.PerPod(b, nil, apply)
	})
	b.Run("istio-native-nftables", func(b *testing.B) { istioIptables(b, true) })
	b.Run("istio-iptables", func(b *testing.B) { istioIptables(b, false) })
}

package netsetup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-iptables/iptables"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// The benchmarks program fresh namespaces with the typical pod configuration (REDIRECT, IPv4) and
// report the median and 90th percentile per pod. Run them with, for example:
//
//	go test -run '^$' -bench . -benchtime 30x ./netsetup/
//
// Namespace creation is not timed.

func typicalRules(tb testing.TB) (*rules.Config, *rules.RuleSet) {
	cfg := rules.Default()
	rs, err := rules.Generate(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg, rs
}

// perPod times op once per iteration, each time in a fresh namespace, and reports percentiles.
func perPod(b *testing.B, op func(n *testutil.Netns) error) { testutil.PerPod(b, nil, op) }

// BenchmarkApply: the whole apply (canonical form cached, probe, one restore, read-back verify).
func BenchmarkApply(b *testing.B) {
	a := newApplier(b, BackendNFT)
	cfg, _ := typicalRules(b)
	ctx := context.Background()
	perPod(b, func(n *testutil.Netns) error {
		h := openNS(b, n)
		_, err := a.Apply(ctx, h, "bench", cfg)
		return err
	})
}

// BenchmarkApplyUnchanged: re-applying to a namespace that already holds the rules (drift check).
func BenchmarkApplyUnchanged(b *testing.B) {
	a := newApplier(b, BackendNFT)
	cfg, _ := typicalRules(b)
	ctx := context.Background()
	n := testutil.NewNetns(b)
	h := openNS(b, n)
	if _, err := a.Apply(ctx, h, "bench", cfg); err != nil {
		b.Fatal(err)
	}
	var samples []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := a.Apply(ctx, h, "bench", cfg); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
	}
	testutil.ReportPercentiles(b, samples)
}

// BenchmarkRestoreOnly: the single iptables-restore of the payload, nothing else.
func BenchmarkRestoreOnly(b *testing.B) {
	testutil.RequireRoot(b)
	_, rs := typicalRules(b)
	payload := rs.Payload(rules.IPv4)
	perPod(b, func(n *testutil.Netns) error {
		h := openNS(b, n)
		return h.Do(func() error {
			_, err := execTool(context.Background(), nil, payload, "iptables-nft-restore", "--noflush")
			return err
		})
	})
}

// BenchmarkExecFloor: one iptables-restore with an empty payload: the cost of any exec of the tool.
func BenchmarkExecFloor(b *testing.B) {
	testutil.RequireRoot(b)
	perPod(b, func(n *testutil.Netns) error {
		h := openNS(b, n)
		return h.Do(func() error {
			_, err := execTool(context.Background(), nil, "", "iptables-nft-restore", "--noflush")
			return err
		})
	})
}

// BenchmarkPerRuleExec: one iptables exec per chain and rule through go-iptables, the approach of
// the original project and of Linkerd's proxy-init.
func BenchmarkPerRuleExec(b *testing.B) {
	testutil.RequireRoot(b)
	_, rs := typicalRules(b)
	perPod(b, func(n *testutil.Netns) error {
		h := openNS(b, n)
		return h.Do(func() error { return applyPerRule(rs) })
	})
}

func applyPerRule(rs *rules.RuleSet) error {
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return err
	}
	for table, chains := range rs.Chains(rules.IPv4) {
		for _, c := range chains {
			if err := ipt.NewChain(table, c); err != nil {
				return err
			}
		}
	}
	for _, r := range rs.Rules(rules.IPv4) {
		if r.Insert > 0 {
			err = ipt.Insert(r.Table, r.Chain, r.Insert, r.Args...)
		} else {
			err = ipt.Append(r.Table, r.Chain, r.Args...)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", strings.Join(r.Args, " "), err)
		}
	}
	return nil
}

// BenchmarkApply50Parallel: 50 pods programmed at once (one goroutine each, as the controller's
// workers would with 50 workers); reports the wall time of the whole burst.
func BenchmarkApply50Parallel(b *testing.B) {
	a := newApplier(b, BackendNFT)
	cfg, _ := typicalRules(b)
	ctx := context.Background()
	var bursts []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		var handles []Namespace
		for j := 0; j < 50; j++ {
			handles = append(handles, openNS(b, testutil.NewNetns(b)))
		}
		b.StartTimer()
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, len(handles))
		for j, h := range handles {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := a.Apply(ctx, h, fmt.Sprint("bench-", j), cfg); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		bursts = append(bursts, time.Since(start))
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	slices.Sort(bursts)
	b.ReportMetric(float64(bursts[len(bursts)/2].Milliseconds()), "ms-p50/burst")
}

// BenchmarkIstioIptables: Istio's own `pilot-agent istio-iptables` (what istio-init runs) with the
// same configuration, for comparison. Build it with `test/tools/build.sh pilot-agent`; the
// benchmark looks for it in PILOT_AGENT or the tools cache and is skipped without it.
func BenchmarkIstioIptables(b *testing.B) {
	testutil.RequireRoot(b)
	agent := os.Getenv("PILOT_AGENT")
	if agent == "" {
		home, _ := os.UserHomeDir()
		agent = filepath.Join(home, ".cache", "istio-pod-network-controller", "tools", "pilot-agent")
	}
	if _, err := os.Stat(agent); err != nil {
		b.Skipf("pilot-agent not built (test/tools/build.sh pilot-agent): %v", err)
	}
	args := []string{"istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-g", "1337", "-m", "REDIRECT",
		"-i", "*", "-x", "", "-b", "*", "-d", "15020,15021,15090", "-o", "15020", "--log_output_level", "default:error"}
	podIP := func(n *testutil.Netns) { // istio-iptables needs a pod IP in the namespace
		n.Run(b, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
		n.Run(b, "ip", "addr", "add", "10.1.0.2/24", "dev", "eth0")
		n.Run(b, "ip", "link", "set", "eth0", "up")
	}
	testutil.PerPod(b, podIP, func(n *testutil.Netns) error {
		h := openNS(b, n)
		return h.Do(func() error {
			_, err := execTool(context.Background(), os.Environ(), "", agent, args...)
			return err
		})
	})
}

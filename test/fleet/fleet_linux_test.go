package fleet

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

var (
	flagN       = flag.String("fleet.n", "10,50,100", "fleet sizes (controllers), comma list")
	flagWindow  = flag.Duration("fleet.window", 30*time.Second, "length of the steady-state and churn windows")
	flagChurn   = flag.Float64("fleet.churn", 10, "pods replaced per second across the fleet in the churn phase")
	flagOutage  = flag.Duration("fleet.outage", 10*time.Second, "how long the API server stays stopped in the restart phase")
	flagStagger = flag.Duration("fleet.stagger", 100*time.Millisecond, "between two controller starts")
	flagDoc     = flag.String("fleet.doc", "", "write the tables into this Markdown file (between its fleet:results markers) and the picture next to it (.svg)")
	flagJSON    = flag.String("fleet.json", "", "write the raw results to this file")
	flagBinary  = flag.String("fleet.controller", "", "the controller binary; empty: build it from this checkout")
	flagVersion = flag.String("fleet.version", "", "the controller binary's version (git describe), for the figures' header")
	flagArgs    = flag.String("fleet.args", "", "more controller flags, space-separated (-v=4)")
	flagKeep    = flag.Bool("fleet.keep", false, "keep the state directories (logs, audit log) of passing runs too")
	flagFrom    = flag.String("fleet.from", "", "measure nothing: render -fleet.doc from this results file (-fleet.json of an earlier run)")
)

// BenchmarkFleet measures the fleet at each size of -fleet.n, ascending, on one control plane: the
// nodes, pods and controllers of each size are added to those of the previous one (see the package
// documentation). Run it once (-benchtime 1x):
//
//	E2E=1 go test -run '^$' -bench Fleet -benchtime 1x -timeout 30m ./test/fleet/ -args -fleet.doc=$PWD/docs/fleet.md
func BenchmarkFleet(b *testing.B) {
	run := Run{Date: time.Now().UTC(), Command: command(), Version: *flagVersion}
	if *flagFrom != "" {
		data, err := os.ReadFile(*flagFrom)
		if err != nil {
			b.Fatal(err)
		}
		if err := json.Unmarshal(data, &run); err != nil {
			b.Fatalf("%s: %v", *flagFrom, err)
		}
	} else {
		cluster.Require(b)
		sizes, err := parseSizes(*flagN)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		controller := *flagBinary
		if controller == "" {
			binDir, err := os.MkdirTemp("", "fleet-bin-")
			if err != nil {
				b.Fatal(err)
			}
			defer os.RemoveAll(binDir)
			bins, err := harness.Build(ctx, binDir)
			if err != nil {
				b.Fatal(err)
			}
			controller = bins.Controller
		}
		s := newSession(ctx, b, controller)
		defer s.close(b)
		for _, n := range sizes {
			ok := b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
				r := s.grow(ctx, b, n)
				report(b, r)
				run.Results = append(run.Results, r)
			})
			if !ok {
				break // the next size builds on this one
			}
		}
	}
	if *flagJSON != "" {
		data, err := json.MarshalIndent(run, "", "  ")
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(*flagJSON, data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if *flagDoc != "" && len(run.Results) > 0 {
		if err := WriteDoc(*flagDoc, strings.TrimSuffix(*flagDoc, filepath.Ext(*flagDoc))+".svg", run); err != nil {
			b.Fatal(err)
		}
	}
}

// command is this run's command line as the figures' source: the -fleet flags that change what
// is measured.
func command() string {
	cmd := "go test -bench Fleet -benchtime 1x ./test/fleet/"
	flag.Visit(func(f *flag.Flag) {
		switch strings.TrimPrefix(f.Name, "fleet.") {
		case "n", "window", "churn", "outage", "stagger", "args":
			cmd += fmt.Sprintf(" -%s=%s", f.Name, f.Value)
		}
	})
	return cmd
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-fleet.n: %q is not a fleet size", f)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// session is one control plane with the chart installed, and a fleet that grows.
type session struct {
	dir     string
	c       *cluster.Cluster
	audit   *AuditLog
	in      *harness.Install
	binary  string
	nodes   []string
	fleet   Fleet
	churner Churner
	// otherWatches: the pod watches not the fleet's, counted before the first controller started.
	otherWatches float64
}

func newSession(ctx context.Context, b *testing.B, controller string) *session {
	s := &session{binary: controller}
	var err error
	if s.dir, err = os.MkdirTemp("", "fleet-"); err != nil {
		b.Fatal(err)
	}
	s.c, s.audit = startCluster(ctx, b, s.dir, NodeNames(1)[0])
	if s.in, err = harness.InstallChart(ctx, s.c, harness.InstallOptions{Dir: s.dir, Log: logWriter{b}}); err != nil {
		s.close(b)
		b.Fatal(err)
	}
	s.churner.Client = s.c.Client
	return s
}

func (s *session) close(b *testing.B) {
	s.fleet.Stop()
	if s.c != nil {
		s.c.Stop()
	}
	if b.Failed() || *flagKeep {
		b.Logf("logs kept in %s", s.dir)
	} else {
		os.RemoveAll(s.dir)
	}
}

// grow adds nodes, their pods and their controllers up to n, then measures: steady state, churn,
// API server restart.
func (s *session) grow(ctx context.Context, b *testing.B, n int) Result {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	r := Result{N: n, Pods: n * PodsPerNode, Stagger: *flagStagger, ChurnRate: *flagChurn, Cores: runtime.NumCPU()}
	r.LoadBefore, _ = LoadAverage()
	all := NodeNames(n)
	added := all[len(s.nodes):]
	if err := Setup(ctx, s.c, added); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if err := CreatePods(ctx, s.c.Client, added, 16); err != nil {
		b.Fatal(err)
	}
	r.CreatePods = time.Since(t0)
	b.Logf("N=%d: %d pods created in %s", n, len(added)*PodsPerNode, r.CreatePods.Round(time.Millisecond))
	base, err := TakeSnapshot(ctx, s.c, nil)
	if err != nil {
		b.Fatal(err)
	}
	r.APIRSSWithoutFleet = mib(base.API.RSS) // the new pods are in, their controllers not yet
	if len(s.nodes) == 0 {
		s.otherWatches = base.PodWatches
	}
	r.OtherPodWatches = s.otherWatches
	t0 = time.Now()
	err = s.fleet.Start(ctx, s.c, added, FleetOptions{Binary: s.binary, Install: s.in, Dir: filepath.Join(s.dir, "fleet"),
		Stagger: *flagStagger, Args: strings.Fields(*flagArgs)})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.fleet.Ready(ctx); err != nil {
		b.Fatal(err)
	}
	r.StartFleet = time.Since(t0)
	s.nodes = all
	b.Logf("N=%d: %d controllers started and ready in %s", n, len(added), r.StartFleet.Round(time.Millisecond))
	time.Sleep(10 * time.Second) // past the initial lists and their garbage

	r.Steady = s.window(ctx, b, func() { time.Sleep(*flagWindow) })
	r.Churn = s.window(ctx, b, func() { r.ChurnResult = s.churner.Run(ctx, s.nodes, *flagChurn, *flagWindow) })
	if r.ChurnResult.Failed > 0 {
		b.Errorf("churn: %d requests failed", r.ChurnResult.Failed)
	}
	time.Sleep(5 * time.Second)
	r.Restart, err = Restart(ctx, s.c, &s.fleet, s.audit, RestartOptions{Outage: *flagOutage, Tail: 10 * time.Second, Timeout: 3 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.fleet.Stats(); err != nil {
		b.Fatal(err) // a controller exited
	}
	return r
}

// startCluster starts etcd and kube-apiserver with the fleet's audit log.
func startCluster(ctx context.Context, b *testing.B, dir, node string) (*cluster.Cluster, *AuditLog) {
	policy := filepath.Join(dir, "audit-policy.yaml")
	audit := &AuditLog{Path: filepath.Join(dir, "audit.log")}
	if err := os.WriteFile(policy, []byte(AuditPolicy(harness.DefaultNamespace)), 0o644); err != nil {
		b.Fatal(err)
	}
	c, err := cluster.Start(ctx, cluster.Options{Dir: filepath.Join(dir, "cluster"), NodeName: node, Log: logWriter{b},
		ExtraAPIServerArgs: []string{"--audit-policy-file=" + policy, "--audit-log-path=" + audit.Path, "--audit-log-maxsize=0"}})
	if err != nil {
		b.Fatal(err)
	}
	return c, audit
}

// window snapshots, runs during, snapshots again and returns the figures in between.
func (s *session) window(ctx context.Context, b *testing.B, during func()) Figures {
	if _, err := s.audit.Next(); err != nil {
		b.Fatal(err)
	}
	a, err := TakeSnapshot(ctx, s.c, &s.fleet)
	if err != nil {
		b.Fatal(err)
	}
	during()
	z, err := TakeSnapshot(ctx, s.c, &s.fleet)
	if err != nil {
		b.Fatal(err)
	}
	evs, err := s.audit.Next()
	if err != nil {
		b.Fatal(err)
	}
	return Window(a, z, evs)
}

// report puts the headline figures on the benchmark's result line.
func report(b *testing.B, r Result) {
	b.ReportMetric(r.Steady.APIRSS, "apiserver-MiB")
	b.ReportMetric(r.Steady.APICPU, "apiserver-cores")
	b.ReportMetric(r.Steady.FleetRequests, "fleet-req/s")
	b.ReportMetric(r.Steady.CtrlRSSMax, "controller-max-MiB")
	b.ReportMetric(r.Churn.APICPU, "churn-apiserver-cores")
	b.ReportMetric(r.Restart.AllWatching.Seconds(), "rewatch-all-s")
	b.ReportMetric(float64(r.Restart.PeakRPS), "restart-peak-req/s")
	b.ReportMetric(0, "ns/op")
}

type logWriter struct{ b *testing.B }

func (w logWriter) Write(p []byte) (int, error) {
	w.b.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

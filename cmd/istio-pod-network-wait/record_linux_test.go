package main

// The release record on real namespaces: the controller's side (root, inside the namespace) writes
// lo's alias; the wait binary, unprivileged, releases on it with the same checks as on the
// annotation, and exits at once when it is there before it starts.

import (
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/redhat-cop/istio-pod-network-controller/initwait"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/record"
)

// writeRecord sets lo's alias in p's namespace as root, as the controller does.
func (p *pod) writeRecord(t testing.TB, alias string) {
	t.Helper()
	h, err := ns.GetNS(p.ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Do(func(ns.NetNS) error { return record.WriteAlias(alias) }); err != nil {
		t.Fatal(err)
	}
}

func (p *pod) readyRecord(t testing.TB, families string) string {
	t.Helper()
	id, err := contract.ParseNetnsID(p.id)
	if err != nil {
		t.Fatal(err)
	}
	return record.Ready(id, "0123456789abcdef", families).String()
}

// TestReleasedByRecord: the annotations file says pending (the kubelet has not refreshed it) and
// the record says ready for this namespace: released, whether the record was there at start or
// arrived while waiting, in both families.
func TestReleasedByRecord(t *testing.T) {
	for _, tc := range []struct {
		name     string
		dual     bool
		families string
		before   bool
	}{
		{"ipv4, record before start", false, contract.FamiliesIPv4, true},
		{"ipv4, record while waiting", false, contract.FamiliesIPv4, false},
		{"dual stack, record while waiting", true, contract.FamiliesDual, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newPod(t)
			p.program(t, istioUID, istioUID, tc.dual)
			p.write(t, map[string]string{contract.KeyStatus: string(contract.StatusPending)})
			if tc.before {
				p.writeRecord(t, p.readyRecord(t, tc.families))
			}
			w := p.start(t, istioUID, istioUID, "--timeout", "1m")
			if !tc.before {
				w.waitLog("reports pending")
				p.writeRecord(t, p.readyRecord(t, tc.families))
			}
			w.exit(initwait.ExitReleased)
			if !strings.Contains(w.logText(), "release record reports ready") {
				t.Errorf("not released by the record:\n%s", w.logText())
			}
		})
	}
}

// TestRecordRefused: a record naming another namespace, a record of an unknown version, and a
// ready record in a namespace without rules are not trusted; the wait goes on until the
// annotation (and the rules) release it.
func TestRecordRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		alias  func(p *pod) string
		log    string
		noRule bool
	}{
		{"another namespace's identity", func(*pod) string {
			return record.Ready(contract.NetnsID{Kind: contract.KindCookie, Value: 1}, "0123456789abcdef", "ipv4").String()
		}, "release record is stale", false},
		{"unknown version", func(p *pod) string {
			return strings.Replace(p.readyRecord(t, "ipv4"), "pnc1", "pnc2", 1)
		}, "unknown version", false},
		{"no rules behind it", func(p *pod) string { return p.readyRecord(t, "ipv4") }, "self-test fails", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newPod(t)
			if !tc.noRule {
				p.program(t, istioUID, istioUID, false)
			}
			p.write(t, map[string]string{contract.KeyStatus: string(contract.StatusPending)})
			w := p.start(t, istioUID, istioUID, "--timeout", "1m")
			w.waitLog("reports pending")
			p.writeRecord(t, tc.alias(p))
			w.waitLog(tc.log)
			w.stillWaiting("on an untrusted record")
			if tc.noRule {
				p.program(t, istioUID, istioUID, false) // the next re-test passes
			} else {
				p.write(t, readyFor(p.id, contract.FamiliesIPv4))
			}
			w.exit(initwait.ExitReleased)
		})
	}
}

// TestRecordOff: --release-record=false ignores a ready record; the annotation releases.
func TestRecordOff(t *testing.T) {
	p := newPod(t)
	p.program(t, istioUID, istioUID, false)
	p.write(t, map[string]string{contract.KeyStatus: string(contract.StatusPending)})
	p.writeRecord(t, p.readyRecord(t, "ipv4"))
	w := p.start(t, istioUID, istioUID, "--timeout", "1m", "--release-record=false")
	w.waitLog("reports pending")
	w.stillWaiting("with --release-record=false on the record")
	p.write(t, readyFor(p.id, contract.FamiliesIPv4))
	w.exit(initwait.ExitReleased)
}

// stillWaiting fails the test if the binary exits within 300 ms (it must not be released now).
func (w *waitProc) stillWaiting(why string) {
	w.t.Helper()
	select {
	case <-w.done:
		w.t.Fatalf("released %s (exit %d):\n%s", why, w.code, w.logText())
	case <-time.After(300 * time.Millisecond):
	}
}

// BenchmarkStartToExitWithRecord measures the wait container's own run when the rules were verified
// and the record written before it started: from starting the binary (forked straight into the
// namespace as UID 1337) to its exit 0, over at least 50 runs; it reports the median, p99 and max,
// and the median CPU time the process used.
// The sub-benchmark start-only runs --print-netns-id instead: the cost of starting the binary at
// all, for comparison.
//
//	go test -run '^$' -bench StartToExitWithRecord ./cmd/istio-pod-network-wait/
func BenchmarkStartToExitWithRecord(b *testing.B) {
	p := newPod(b)
	p.program(b, istioUID, istioUID, false)
	p.write(b, map[string]string{contract.KeyStatus: string(contract.StatusPending)})
	p.writeRecord(b, p.readyRecord(b, "ipv4"))
	b.Run("released", func(b *testing.B) {
		benchStartToExit(b, p, "--annotations-file", p.dir+"/annotations", "--termination-message-path", p.term, "--timeout", "1m")
	})
	b.Run("start-only", func(b *testing.B) { benchStartToExit(b, p, "--print-netns-id") })
}

func benchStartToExit(b *testing.B, p *pod, args ...string) {
	h, err := ns.GetNS(p.ns.Path)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	var samples, cpu []time.Duration
	for i := 0; i < max(b.N, 50); i++ {
		cmd := exec.Command(waitBin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: istioUID, Gid: istioUID}}
		var start time.Time
		// Forked from a thread inside the namespace, the child starts in it.
		if err := h.Do(func(ns.NetNS) error { start = time.Now(); return cmd.Start() }); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatalf("run %d: %v", i, err)
		}
		samples = append(samples, time.Since(start))
		cpu = append(cpu, cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())
	}
	slices.Sort(samples)
	slices.Sort(cpu)
	// CPU time (user + system) depends far less on the machine's load than the wall time.
	b.ReportMetric(float64(cpu[len(cpu)/2].Microseconds())/1000, "ms-cpu-median")
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(samples[len(samples)*99/100].Microseconds())/1000, "ms-p99")
	b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1000, "ms-max")
	b.ReportMetric(float64(len(samples)), "runs")
}

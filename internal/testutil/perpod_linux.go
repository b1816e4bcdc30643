package testutil

import (
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// PerPod times op once per iteration, each time in a fresh namespace prepared by setup (untimed,
// may be nil), and reports the median and 90th percentile per pod.
func PerPod(b *testing.B, setup func(n *Netns), op func(n *Netns) error) {
	samples := make([]time.Duration, 0, b.N)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		n := NewNetns(b)
		if setup != nil {
			setup(n)
		}
		b.StartTimer()
		start := time.Now()
		if err := op(n); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
	}
	ReportPercentiles(b, samples)
}

// ReportPercentiles reports the median and 90th percentile of samples in milliseconds per pod.
func ReportPercentiles(b *testing.B, samples []time.Duration) {
	slices.Sort(samples)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(samples[len(samples)/2]), "ms-p50/pod")
	b.ReportMetric(ms(samples[len(samples)*9/10]), "ms-p90/pod")
}

// UserNetns starts a sandbox process in a new user and network namespace (the pod's UID and GID 0
// are host ID base, 65536 of them, as for hostUsers: false), brings lo up in it and returns the
// path of its network namespace; the sandbox ends with the test.
func UserNetns(t testing.TB, base int) string {
	t.Helper()
	RequireRoot(t)
	sandbox := exec.Command("sleep", "600")
	sandbox.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: 65536}},
	}
	if err := sandbox.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sandbox.Process.Kill(); _ = sandbox.Wait() })
	path := "/proc/" + strconv.Itoa(sandbox.Process.Pid) + "/ns/net"
	Run(t, "nsenter", "--net="+path, "ip", "link", "set", "lo", "up")
	return path
}

// Burst times op run at once for pods fresh namespaces (created untimed), once per iteration, and
// reports the median burst duration.
func Burst(b *testing.B, pods int, op func(n *Netns) error) {
	bursts := make([]time.Duration, 0, b.N)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		namespaces := make([]*Netns, pods)
		for j := range namespaces {
			namespaces[j] = NewNetns(b)
		}
		b.StartTimer()
		start := time.Now()
		errs := make(chan error, pods)
		for _, n := range namespaces {
			go func() { errs <- op(n) }()
		}
		var failed error
		for range namespaces {
			if err := <-errs; err != nil && failed == nil {
				failed = err
			}
		}
		bursts = append(bursts, time.Since(start))
		if failed != nil {
			b.Fatal(failed)
		}
	}
	slices.Sort(bursts)
	b.ReportMetric(float64(bursts[len(bursts)/2].Microseconds())/1000, "ms-p50/burst")
}

package main

// Real-namespace tests: the wait binary, built once, runs unprivileged inside a throwaway network
// namespace programmed with the project's own Istio rule generator, as the kubelet would run it.

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/initwait"
	"github.com/redhat-cop/istio-pod-network-controller/initwait/waittest"
	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// waitBin is the wait binary built by TestMain, in a directory every UID can read.
var waitBin string

// guard bounds every wait: a failure guard against hangs, not a speed assertion.
const guard = 60 * time.Second

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "istio-pod-network-wait-test-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	waitBin = filepath.Join(dir, "istio-pod-network-wait")
	// The release build: static and stripped (docs/wait.md).
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", waitBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestBinaryStaticAndSmall checks the release build: no ELF interpreter (static) and at most 5 MiB.
func TestBinaryStaticAndSmall(t *testing.T) {
	f, err := elf.Open(waitBin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Error("the wait binary has an ELF interpreter: it is not static (CGO_ENABLED=0)")
		}
	}
	st, err := os.Stat(waitBin)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 5<<20 {
		t.Errorf("the stripped wait binary is %d bytes, more than 5 MiB", st.Size())
	}
	t.Logf("stripped static binary: %d bytes", st.Size())
}

func TestPrintNetnsID(t *testing.T) {
	want, err := initwait.OwnNetnsID()
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runMain("--print-netns-id")
	if code != 0 || out != want.String()+"\n" {
		t.Errorf("--print-netns-id: exit %d, stdout %q, stderr %q; want %q", code, out, stderr, want)
	}
}

// pod is a throwaway network namespace with its downward-API volume and termination-message file.
type pod struct {
	ns   *testutil.Netns
	dir  string // the annotations volume
	term string // the termination-message file
	id   string // the namespace identity, as the binary prints it
}

func newPod(t testing.TB) *pod {
	t.Helper()
	ns := testutil.NewNetns(t)
	base, err := os.MkdirTemp("", "istio-pod-network-wait-pod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &pod{ns: ns, dir: filepath.Join(base, "podinfo"), term: filepath.Join(base, "termination-log")}
	// Like the kubelet's, the termination-message file exists and the container's user can write it.
	if err := os.WriteFile(p.term, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p.term, 0o666); err != nil {
		t.Fatal(err)
	}
	p.id = strings.TrimSpace(ns.Run(t, waitBin, "--print-netns-id"))
	if _, err := contract.ParseNetnsID(p.id); err != nil {
		t.Fatalf("--print-netns-id in %s: %v", ns.Name, err)
	}
	return p
}

// program installs Istio's default sidecar rules for the proxy uid/gid with the project's generator
// (IPv6 too when dual, with ::6 on lo, as the controller does).
func (p *pod) program(t testing.TB, uid, gid uint32, dual bool) {
	t.Helper()
	cfg := rules.Default()
	cfg.ProxyUIDs, cfg.ProxyGIDs, cfg.EnableIPv6 = []uint32{uid}, []uint32{gid}, dual
	rs, err := rules.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.restore(t, "iptables-nft-restore", rs.Payload(rules.IPv4))
	if dual {
		p.ns.Run(t, "ip", "-6", "addr", "add", "::6/128", "dev", "lo", "nodad")
		p.restore(t, "ip6tables-nft-restore", rs.Payload(rules.IPv6))
	}
}

func (p *pod) restore(t testing.TB, tool, payload string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", p.ns.Name, tool)
	cmd.Stdin = strings.NewReader(payload)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s in %s: %v\n%s\npayload:\n%s", tool, p.ns.Name, err, out, payload)
	}
}

// write publishes annotations the way the kubelet does.
func (p *pod) write(t testing.TB, ann map[string]string) {
	t.Helper()
	if err := waittest.WriteAnnotations(p.dir, ann); err != nil {
		t.Fatal(err)
	}
}

// readyFor returns the controller's ready annotations naming netns id.
func readyFor(id, families string) map[string]string {
	return map[string]string{
		contract.KeyStatus:   string(contract.StatusReady),
		contract.KeyNetns:    id,
		contract.KeyFamilies: families,
		contract.KeyRules:    "0123abcd",
	}
}

func (p *pod) termMessage(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(p.term)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitProc is the wait binary running in a pod's namespace as an unprivileged user.
type waitProc struct {
	t    testing.TB
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  strings.Builder
	done chan struct{}
	code int
}

// start runs the wait binary inside p's namespace as uid/gid with no supplementary groups and no
// capabilities, watching p's volume, with the given extra flags.
func (p *pod) start(t testing.TB, uid, gid uint32, flags ...string) *waitProc {
	t.Helper()
	argv := []string{"netns", "exec", p.ns.Name,
		"setpriv", "--reuid", strconv.FormatUint(uint64(uid), 10), "--regid", strconv.FormatUint(uint64(gid), 10), "--clear-groups",
		waitBin, "--annotations-file", filepath.Join(p.dir, "annotations"), "--termination-message-path", p.term}
	w := &waitProc{t: t, cmd: exec.Command("ip", append(argv, flags...)...), done: make(chan struct{})}
	stderr, err := w.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			w.mu.Lock()
			w.log.WriteString(sc.Text() + "\n")
			w.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr)
		err := w.cmd.Wait()
		var exit *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exit):
			w.code = exit.ExitCode()
		default:
			w.code = -1
		}
		close(w.done)
	}()
	t.Cleanup(func() {
		_ = w.cmd.Process.Kill()
		<-w.done
		if t.Failed() {
			t.Logf("wait binary log:\n%s", w.logText())
		}
	})
	return w
}

func (w *waitProc) logText() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.log.String()
}

// waitLog waits until the binary has logged a line containing substr.
func (w *waitProc) waitLog(substr string) {
	w.t.Helper()
	deadline := time.Now().Add(guard)
	for !strings.Contains(w.logText(), substr) {
		select {
		case <-w.done:
			if strings.Contains(w.logText(), substr) {
				return
			}
			w.t.Fatalf("the wait binary exited (%d) without logging %q", w.code, substr)
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("the wait binary never logged %q", substr)
		}
	}
}

// exit waits for the binary to end and checks its exit code.
func (w *waitProc) exit(want initwait.ExitCode) {
	w.t.Helper()
	select {
	case <-w.done:
	case <-time.After(guard):
		w.t.Fatalf("the wait binary did not exit; log:\n%s", w.logText())
	}
	if w.code != int(want) {
		w.t.Fatalf("the wait binary exited %d, want %d; log:\n%s", w.code, want, w.logText())
	}
}

const (
	istioUID    = 1337
	openshiftID = 1000670000 // a namespace-range UID as OpenShift's restricted-v2 assigns
)

func TestReleasedInProgrammedNamespace(t *testing.T) {
	cases := []struct {
		name     string
		uid      uint32
		dual     bool
		families string
		flags    []string
	}{
		{"ipv4 uid 1337", istioUID, false, contract.FamiliesIPv4, nil},
		{"ipv4 custom uid", openshiftID, false, contract.FamiliesIPv4, nil},
		{"dual stack uid 1337", istioUID, true, contract.FamiliesDual, nil},
		{"dual stack custom uid", openshiftID, true, contract.FamiliesDual, nil},
		{"ipv4 polling", istioUID, false, contract.FamiliesIPv4, []string{"--poll"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newPod(t)
			p.program(t, tc.uid, tc.uid, tc.dual)
			p.write(t, map[string]string{contract.KeyStatus: string(contract.StatusPending)})
			w := p.start(t, tc.uid, tc.uid, append([]string{"--timeout", "1m"}, tc.flags...)...)
			w.waitLog("reports pending")
			p.write(t, readyFor(p.id, tc.families))
			w.exit(initwait.ExitReleased)
			if want := "families=" + tc.families; !strings.Contains(w.logText(), "released: the redirect self-test passed") ||
				!strings.Contains(w.logText(), want) {
				t.Errorf("log does not say it released after testing %s:\n%s", tc.families, w.logText())
			}
		})
	}
}

func TestNoRulesFailsSelfTestAtTimeout(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	p.write(t, readyFor(p.id, contract.FamiliesIPv4))
	w := p.start(t, istioUID, istioUID, "--timeout", "3s")
	w.waitLog("the redirect self-test fails")
	w.exit(initwait.ExitSelfTest)
	msg := p.termMessage(t)
	for _, want := range []string{"timed out after 3s", "self-test fails", "127.0.0.6:15002 was not redirected",
		"istio-proxy's runAsUser; 0 or unset means 1337", "this process runs as UID 1337"} {
		if !strings.Contains(msg, want) {
			t.Errorf("termination message %q does not contain %q", msg, want)
		}
	}
}

func TestRulesAddedWhileWaiting(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	p.write(t, readyFor(p.id, contract.FamiliesDual))
	w := p.start(t, istioUID, istioUID, "--timeout", "1m")
	w.waitLog("the redirect self-test fails")
	// No annotation change: the periodic re-test must find the rules.
	p.program(t, istioUID, istioUID, true)
	w.exit(initwait.ExitReleased)
}

func TestStaleAnnotationKeepsWaiting(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	p.program(t, istioUID, istioUID, false)
	other := newPod(t) // a re-created sandbox's predecessor, say
	p.write(t, readyFor(other.id, contract.FamiliesIPv4))
	w := p.start(t, istioUID, istioUID, "--timeout", "3s")
	w.waitLog("stale")
	stale := readyFor(other.id, contract.FamiliesIPv4)
	stale["example.com/unrelated"] = "changed"
	p.write(t, stale)
	w.exit(initwait.ExitTimeout)
	if n := strings.Count(w.logText(), "level=WARN msg=\"waiting: the ready annotation is stale"); n != 1 {
		t.Errorf("stale logged %d times, want once:\n%s", n, w.logText())
	}
	msg := p.termMessage(t)
	for _, want := range []string{"timed out after 3s", "stale", other.id, p.id} {
		if !strings.Contains(msg, want) {
			t.Errorf("termination message %q does not contain %q", msg, want)
		}
	}
}

func TestStaleThenThisNamespace(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	p.program(t, istioUID, istioUID, false)
	other := newPod(t)
	p.write(t, readyFor(other.id, contract.FamiliesIPv4))
	w := p.start(t, istioUID, istioUID, "--timeout", "1m")
	w.waitLog("stale")
	p.write(t, readyFor(p.id, contract.FamiliesIPv4))
	w.exit(initwait.ExitReleased)
}

func TestControllerFailure(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	reason := `annotation traffic.sidecar.istio.io/excludeInboundPorts: "80,": empty element`
	p.write(t, map[string]string{contract.KeyStatus: string(contract.StatusPending)})
	w := p.start(t, istioUID, istioUID)
	w.waitLog("reports pending")
	p.write(t, map[string]string{contract.KeyStatus: string(contract.StatusFailed), contract.KeyReason: reason})
	w.exit(initwait.ExitFailed)
	if msg := p.termMessage(t); !strings.Contains(msg, reason) {
		t.Errorf("termination message %q does not hold the controller's reason", msg)
	}
}

func TestWrongUID(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	p.program(t, istioUID, istioUID, false)
	p.write(t, readyFor(p.id, contract.FamiliesIPv4))
	w := p.start(t, 4242, 4242, "--timeout", "3s")
	w.waitLog("the redirect self-test fails")
	w.exit(initwait.ExitSelfTest)
	msg := p.termMessage(t)
	for _, want := range []string{"only works when the wait container runs as the UID the rules exempt", "this process runs as UID 4242"} {
		if !strings.Contains(msg, want) {
			t.Errorf("termination message %q does not contain %q", msg, want)
		}
	}
}

func TestSIGTERM(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	p.write(t, map[string]string{contract.KeyStatus: string(contract.StatusPending)})
	w := p.start(t, istioUID, istioUID)
	w.waitLog("reports pending")
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	w.exit(initwait.ExitError)
	if msg := p.termMessage(t); !strings.Contains(msg, "interrupted") {
		t.Errorf("termination message %q does not say it was interrupted", msg)
	}
}

// BenchmarkReleaseAfterSwap measures the time from the kubelet-style "..data" swap that makes the
// annotation ready to the wait binary's exit 0, in a programmed namespace (process start and
// namespace entry happen before the swap and are not counted). It reports the median and the worst
// over at least 20 runs.
func BenchmarkReleaseAfterSwap(b *testing.B) {
	for _, mode := range []struct {
		name  string
		flags []string
	}{{"inotify", nil}, {"poll", []string{"--poll"}}} {
		b.Run(mode.name, func(b *testing.B) {
			p := newPod(b)
			p.program(b, istioUID, istioUID, false)
			var samples []time.Duration
			for i := 0; i < max(b.N, 20); i++ {
				p.write(b, map[string]string{contract.KeyStatus: string(contract.StatusPending)})
				w := p.start(b, istioUID, istioUID, mode.flags...)
				w.waitLog("reports pending")
				start := time.Now()
				p.write(b, readyFor(p.id, contract.FamiliesIPv4))
				w.exit(initwait.ExitReleased)
				samples = append(samples, time.Since(start))
			}
			slices.Sort(samples)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "ms-median")
			b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1000, "ms-max")
			b.ReportMetric(float64(len(samples)), "runs")
		})
	}
}

package initwait

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/initwait/waittest"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

// Durations of the fake clock's timers: distinct, so a test fires exactly the one it means.
const (
	testTimeout  = time.Hour
	testRetest   = 2 * time.Minute
	testProgress = 3 * time.Minute
)

// fakeClock hands out timers that fire only when the test says so.
type fakeClock struct {
	mu      sync.Mutex
	pending map[time.Duration][]chan time.Time
}

func (c *fakeClock) Now() time.Time { return time.Unix(1e9, 0) }

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.pending[d] = append(c.pending[d], ch)
	return ch
}

// fire fires the pending timers of duration d, waiting until Run has asked for one.
func (c *fakeClock) fire(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for {
		c.mu.Lock()
		chs := c.pending[d]
		delete(c.pending, d)
		c.mu.Unlock()
		for _, ch := range chs {
			ch <- time.Unix(1e9, 0)
		}
		if len(chs) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Run never started a %s timer", d)
		}
		time.Sleep(time.Millisecond)
	}
}

// fakeTester is a SelfTester whose result the test sets.
type fakeTester struct {
	mu    sync.Mutex
	err   error
	calls []Family
}

var _ SelfTester = (*fakeTester)(nil)

func (f *fakeTester) Test(_ context.Context, fam Family) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fam)
	return f.err
}

func (f *fakeTester) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeTester) called() []Family {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// runHarness runs Run in the background against a real annotations directory, with a fake clock,
// a fake self-test and the namespace identity testSelf.
type runHarness struct {
	t      *testing.T
	dir    string
	term   string
	clock  *fakeClock
	tester *fakeTester
	log    *syncBuffer
	cancel context.CancelFunc
	done   chan ExitCode
}

// startRun starts Run; initial (unless nil) is written before it starts.
func startRun(t *testing.T, initial map[string]string, mod func(*Config)) *runHarness {
	t.Helper()
	dir, file := annotationsDir(t)
	log, buf := testLogger(t)
	h := &runHarness{
		t: t, dir: dir, term: filepath.Join(t.TempDir(), "termination-log"),
		clock: &fakeClock{pending: map[time.Duration][]chan time.Time{}}, tester: &fakeTester{},
		log: buf, done: make(chan ExitCode, 1),
	}
	if initial != nil {
		h.write(initial)
	}
	cfg := Config{
		AnnotationsFile:        file,
		Timeout:                testTimeout,
		TerminationMessagePath: h.term,
		PollInterval:           10 * time.Millisecond,
		RetestInterval:         testRetest,
		ProgressInterval:       testProgress,
		Clock:                  h.clock,
		NetnsID:                func() (contract.NetnsID, error) { return testSelf, nil },
		SelfTest:               h.tester,
		Log:                    log,
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		<-h.done
	})
	return h
}

func (h *runHarness) write(ann map[string]string) {
	h.t.Helper()
	if err := waittest.WriteAnnotations(h.dir, ann); err != nil {
		h.t.Fatal(err)
	}
}

// waitLog waits until the log holds n lines containing substr.
func (h *runHarness) waitLog(substr string, n int) {
	h.t.Helper()
	deadline := time.Now().Add(guard)
	for strings.Count(h.log.String(), substr) < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("the log never had %d lines with %q:\n%s", n, substr, h.log)
		}
		time.Sleep(time.Millisecond)
	}
}

// sync returns once Run has evaluated everything written before the call: each progress tick
// is followed by an evaluation, and the second tick is taken only after that evaluation.
func (h *runHarness) sync() {
	h.t.Helper()
	for range 2 {
		n := strings.Count(h.log.String(), "still waiting")
		h.clock.fire(h.t, testProgress)
		h.waitLog("still waiting", n+1)
	}
}

// exit waits for Run's result and checks it.
func (h *runHarness) exit(want ExitCode) {
	h.t.Helper()
	select {
	case got := <-h.done:
		h.done <- got // for the cleanup
		if got != want {
			h.t.Fatalf("Run returned %d, want %d; log:\n%s", got, want, h.log)
		}
	case <-time.After(guard):
		h.t.Fatalf("Run did not return; log:\n%s", h.log)
	}
}

// running checks that Run has not returned.
func (h *runHarness) running() {
	h.t.Helper()
	select {
	case got := <-h.done:
		h.done <- got
		h.t.Fatalf("Run returned %d, want it still waiting; log:\n%s", got, h.log)
	default:
	}
}

func (h *runHarness) termMessage() string {
	h.t.Helper()
	b, err := os.ReadFile(h.term)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		h.t.Fatal(err)
	}
	return string(b)
}

func TestRunReleasesWhenReadyForThisNamespace(t *testing.T) {
	for _, tc := range []struct {
		name     string
		families string
		want     []Family
	}{
		{"ipv4", contract.FamiliesIPv4, []Family{IPv4}},
		{"dual stack", contract.FamiliesDual, []Family{IPv4, IPv6}},
		{"no families annotation", "", []Family{IPv4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startRun(t, ready("cookie:4097", contract.KeyFamilies, tc.families), nil)
			h.exit(ExitReleased)
			if got := h.tester.called(); !slices.Equal(got, tc.want) {
				t.Errorf("self-tested %v, want %v", got, tc.want)
			}
			if strings.Count(h.log.String(), "released: the redirect self-test passed") != 1 {
				t.Errorf("log does not say it released once:\n%s", h.log)
			}
			if msg := h.termMessage(); msg != "" {
				t.Errorf("termination message %q on success, want none", msg)
			}
		})
	}
}

func TestRunWaitsThroughPendingThenReleases(t *testing.T) {
	h := startRun(t, nil, nil)
	h.waitLog("annotations file does not exist yet", 1)
	h.write(map[string]string{"app": "x"})
	h.waitLog("has not handled this pod yet", 1)
	h.write(map[string]string{contract.KeyStatus: "pending", contract.KeyReason: "no network namespace found for pod IP 10.0.0.5"})
	h.waitLog(`reason="no network namespace found for pod IP 10.0.0.5"`, 1)
	// The same state again (another annotation changed): no new line.
	h.write(map[string]string{contract.KeyStatus: "pending", contract.KeyReason: "no network namespace found for pod IP 10.0.0.5", "app": "y"})
	h.sync()
	h.write(map[string]string{contract.KeyStatus: "pending", contract.KeyReason: "iptables-restore: exit status 4"})
	h.waitLog(`reason="iptables-restore: exit status 4"`, 1)
	h.running()
	if n := strings.Count(h.log.String(), `reason="no network namespace found`); n != 1 {
		t.Errorf("the pending reason was logged %d times, want once per change:\n%s", n, h.log)
	}
	if n := len(h.tester.called()); n != 0 {
		t.Errorf("self-tested %d times before ready", n)
	}
	h.write(ready("cookie:4097"))
	h.exit(ExitReleased)
}

func TestRunFailedWritesReason(t *testing.T) {
	reason := `annotation traffic.sidecar.istio.io/excludeInboundPorts: "80,": empty element`
	h := startRun(t, map[string]string{contract.KeyStatus: "pending"}, nil)
	h.waitLog("reports pending", 1)
	h.write(map[string]string{contract.KeyStatus: "failed", contract.KeyReason: reason})
	h.exit(ExitFailed)
	if msg := h.termMessage(); !strings.Contains(msg, reason) {
		t.Errorf("termination message %q does not hold the reason %q", msg, reason)
	}
}

func TestRunStaleAnnotationKeepsWaiting(t *testing.T) {
	h := startRun(t, ready("cookie:17"), nil)
	h.waitLog("stale", 1)
	h.write(ready("cookie:17", "app", "changed"))
	h.sync()
	h.running()
	if n := strings.Count(h.log.String(), `level=WARN msg="waiting: the ready annotation is stale`); n != 1 {
		t.Errorf("stale logged %d times, want once:\n%s", n, h.log)
	}
	if n := len(h.tester.called()); n != 0 {
		t.Errorf("self-tested %d times on a stale annotation", n)
	}
	h.clock.fire(t, testTimeout)
	h.exit(ExitTimeout)
	msg := h.termMessage()
	for _, want := range []string{"timed out after 1h0m0s", "stale", "cookie:17", "cookie:4097"} {
		if !strings.Contains(msg, want) {
			t.Errorf("termination message %q does not contain %q", msg, want)
		}
	}
}

func TestRunStaleThenThisNamespace(t *testing.T) {
	h := startRun(t, ready("cookie:17"), nil)
	h.waitLog("stale", 1)
	h.write(ready("cookie:4097"))
	h.exit(ExitReleased)
}

func TestRunSelfTestRetestedOnTimer(t *testing.T) {
	h := startRun(t, nil, nil)
	h.tester.setErr(errors.New("connection refused"))
	h.write(ready("cookie:4097"))
	h.waitLog("self-test fails", 1)
	h.clock.fire(t, testRetest)
	h.sync()
	if n := len(h.tester.called()); n != 2 {
		t.Errorf("self-tested %d times, want 2 (once on the change, once on the timer)", n)
	}
	if n := strings.Count(h.log.String(), `err="connection refused"`); n != 1 {
		t.Errorf("the same self-test failure was logged %d times, want once:\n%s", n, h.log)
	}
	h.tester.setErr(nil)
	h.clock.fire(t, testRetest)
	h.exit(ExitReleased)
}

func TestRunSelfTestRetestedOnChange(t *testing.T) {
	h := startRun(t, nil, nil)
	h.tester.setErr(errors.New("connection refused"))
	h.write(ready("cookie:4097"))
	h.waitLog("self-test fails", 1)
	h.tester.setErr(nil)
	h.write(ready("cookie:4097", contract.KeyRules, "a-new-hash"))
	h.exit(ExitReleased)
}

func TestRunSelfTestFailingAtTimeout(t *testing.T) {
	h := startRun(t, nil, nil)
	h.tester.setErr(errors.New("ipv4 redirect self-test failed: this process runs as UID 4242"))
	h.write(ready("cookie:4097"))
	h.waitLog("self-test fails", 1)
	h.clock.fire(t, testTimeout)
	h.exit(ExitSelfTest)
	if msg := h.termMessage(); !strings.Contains(msg, "self-test fails") || !strings.Contains(msg, "UID 4242") {
		t.Errorf("termination message %q does not say the self-test fails and why", msg)
	}
}

func TestRunTimeoutAfterSelfTestFailureThenPending(t *testing.T) {
	h := startRun(t, nil, nil)
	h.tester.setErr(errors.New("refused"))
	h.write(ready("cookie:4097"))
	h.waitLog("self-test fails", 1)
	h.write(map[string]string{contract.KeyStatus: "pending", contract.KeyReason: "re-programming"})
	h.waitLog("reports pending", 1)
	h.clock.fire(t, testTimeout)
	h.exit(ExitTimeout)
	if msg := h.termMessage(); !strings.Contains(msg, "re-programming") || strings.Contains(msg, "refused") {
		t.Errorf("termination message %q: want the pending reason, not the earlier self-test failure", msg)
	}
}

func TestRunInterceptionNone(t *testing.T) {
	t.Run("no rules: released without a self-test", func(t *testing.T) {
		h := startRun(t, ready("cookie:4097", istioapi.AnnotationInterceptionMode, "NONE", contract.KeyRules, "none"), nil)
		h.exit(ExitReleased)
		if n := len(h.tester.called()); n != 0 {
			t.Errorf("self-tested %d times", n)
		}
	})
	t.Run("rules programmed: self-tested", func(t *testing.T) {
		h := startRun(t, nil, nil)
		h.tester.setErr(errors.New("refused"))
		h.write(ready("cookie:4097", istioapi.AnnotationInterceptionMode, "NONE"))
		h.waitLog("self-test fails", 1)
		h.running()
	})
}

func TestRunIncompleteFileIsNotReady(t *testing.T) {
	h := startRun(t, nil, nil)
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	half := []byte(contract.KeyNetns + "=\"cookie:4097\"\n" + contract.KeyStatus + "=\"rea")
	if err := os.WriteFile(filepath.Join(h.dir, "annotations"), half, 0o644); err != nil {
		t.Fatal(err)
	}
	h.waitLog("not complete yet", 1)
	h.running()
	if err := os.WriteFile(filepath.Join(h.dir, "annotations"), append(half, []byte("dy\"")...), 0o644); err != nil {
		t.Fatal(err)
	}
	h.exit(ExitReleased)
}

func TestRunPolling(t *testing.T) {
	h := startRun(t, map[string]string{contract.KeyStatus: "pending"}, func(c *Config) { c.ForcePoll = true })
	h.waitLog("reports pending", 1)
	h.write(ready("cookie:4097"))
	h.exit(ExitReleased)
}

func TestRunProgressAndForever(t *testing.T) {
	h := startRun(t, map[string]string{contract.KeyStatus: "pending", contract.KeyReason: "busy"}, func(c *Config) { c.Timeout = 0 })
	h.waitLog("reports pending", 1)
	h.sync()
	if !strings.Contains(h.log.String(), `state="waiting: the controller reports pending (reason: busy)"`) {
		t.Errorf("progress line does not give the state:\n%s", h.log)
	}
	if !strings.Contains(h.log.String(), `timeout="none (wait forever)"`) {
		t.Errorf("start line does not say it waits forever:\n%s", h.log)
	}
	h.clock.mu.Lock()
	_, timer := h.clock.pending[0]
	h.clock.mu.Unlock()
	if timer {
		t.Error("a timeout timer was started with Timeout 0")
	}
	h.running()
}

func TestRunInterrupted(t *testing.T) {
	h := startRun(t, map[string]string{contract.KeyStatus: "pending"}, nil)
	h.waitLog("reports pending", 1)
	h.cancel()
	h.exit(ExitError)
	if msg := h.termMessage(); !strings.Contains(msg, "interrupted") || !strings.Contains(msg, "pending") {
		t.Errorf("termination message %q does not say it was interrupted while pending", msg)
	}
}

func TestRunNetnsIdentityUnreadable(t *testing.T) {
	h := startRun(t, ready("cookie:4097"), func(c *Config) {
		c.NetnsID = func() (contract.NetnsID, error) { return contract.NetnsID{}, errors.New("socket: permission denied") }
	})
	h.exit(ExitError)
	if msg := h.termMessage(); !strings.Contains(msg, "socket: permission denied") {
		t.Errorf("termination message %q does not give the cause", msg)
	}
}

func TestRunLongReasonTruncated(t *testing.T) {
	reason := strings.Repeat("é", 5000)
	h := startRun(t, map[string]string{contract.KeyStatus: "failed", contract.KeyReason: reason}, nil)
	h.exit(ExitFailed)
	msg := h.termMessage()
	if len(msg) > maxTerminationMessage || !strings.HasPrefix(msg, "the controller reports") || !strings.HasSuffix(msg, "é") {
		t.Errorf("termination message of %d bytes: want at most %d, cut at a character boundary", len(msg), maxTerminationMessage)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no file", func(c *Config) { c.AnnotationsFile = "" }, `annotations file "": must not be empty`},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, `timeout "-1s": must not be negative`},
		{"negative poll", func(c *Config) { c.PollInterval = -1 }, `poll interval "-1ns"`},
		{"negative retest", func(c *Config) { c.RetestInterval = -1 }, `retest interval "-1ns"`},
		{"negative progress", func(c *Config) { c.ProgressInterval = -1 }, `progress interval "-1ns"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{AnnotationsFile: "/x"}
			tc.mod(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
			if code := Run(context.Background(), cfg); code != ExitUsage {
				t.Errorf("Run = %d, want %d", code, ExitUsage)
			}
		})
	}
	if err := (&Config{AnnotationsFile: "/x"}).Validate(); err != nil {
		t.Errorf("minimal config: %v", err)
	}
}

// TestInterruptsOnlyWhenWaiting: Config.Interrupts is not called for a pod released at the first
// look; when the look finds it pending it is called before any line about that state is written,
// and cancelling the context it returned ends the wait with ExitError, after which its stop ran.
func TestInterruptsOnlyWhenWaiting(t *testing.T) {
	var mu sync.Mutex
	var calls, stops int
	var cancel context.CancelFunc
	withHook := func(c *Config) {
		log := c.Log // the test's logger itself: its lines are never held
		c.Interrupts = func(ctx context.Context) (context.Context, func()) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			log.Info("interrupts subscribed")
			ctx, cancel = context.WithCancel(ctx)
			return ctx, func() { mu.Lock(); stops++; mu.Unlock() }
		}
	}
	counts := func() (int, int) { mu.Lock(); defer mu.Unlock(); return calls, stops }

	h := startRun(t, ready(testSelf.String()), withHook)
	h.exit(ExitReleased)
	if c, _ := counts(); c != 0 {
		t.Errorf("Interrupts called %d times for a pod released at the first look, want 0", c)
	}

	calls, stops = 0, 0
	h = startRun(t, map[string]string{contract.KeyStatus: "pending"}, withHook)
	h.waitLog("reports pending", 1)
	if c, _ := counts(); c != 1 {
		t.Fatalf("Interrupts called %d times for a pending pod, want 1", c)
	}
	log := h.log.String()
	if sub, pending := strings.Index(log, "interrupts subscribed"), strings.Index(log, "reports pending"); sub < 0 || sub > pending {
		t.Errorf("the pending state was logged before the signals were subscribed:\n%s", log)
	}
	mu.Lock()
	cancel()
	mu.Unlock()
	h.exit(ExitError)
	if _, s := counts(); s != 1 {
		t.Errorf("stop called %d times, want 1", s)
	}
}

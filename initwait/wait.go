// Package initwait is the logic of the unprivileged wait container that replaces Istio's istio-init
// in every mesh pod. It reads the pod's annotations from a downward-API file, waits until the node
// controller reports the redirect rules ready for this very network namespace, proves with Istio's
// connection test that the redirect works, and releases the pod (exit 0). It imports no Kubernetes,
// iptables or netlink code: the binary stays small and static.
package initwait

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// ExitCode is the wait binary's exit status.
type ExitCode int

// Exit codes; docs/wait.md and --help list them.
const (
	// ExitReleased: ready for this namespace and the self-test passed (or interception is NONE).
	ExitReleased ExitCode = 0
	// ExitError: interrupted (SIGTERM) or an internal error such as an unreadable namespace identity.
	ExitError ExitCode = 1
	// ExitUsage: bad flags or configuration.
	ExitUsage ExitCode = 2
	// ExitTimeout: --timeout passed while the controller had not reported ready for this namespace.
	ExitTimeout ExitCode = 3
	// ExitFailed: the controller reports the pod's configuration invalid (status failed).
	ExitFailed ExitCode = 4
	// ExitSelfTest: --timeout passed while ready for this namespace but the self-test kept failing.
	ExitSelfTest ExitCode = 5
)

// Defaults of Config.
const (
	DefaultAnnotationsFile        = "/etc/istio-pod-network/annotations"
	DefaultTerminationMessagePath = "/dev/termination-log"
	DefaultPollInterval           = 100 * time.Millisecond
	DefaultRetestInterval         = 2500 * time.Millisecond
	DefaultProgressInterval       = 30 * time.Second
)

// maxTerminationMessage is the kubelet's limit on a termination message.
const maxTerminationMessage = 4096

// Clock is the time source of Run; tests substitute one they fire by hand.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config is everything Run needs. Zero values of the optional fields mean the defaults.
type Config struct {
	// AnnotationsFile is the downward-API file with the pod's annotations (required).
	AnnotationsFile string
	// Timeout ends the wait with ExitTimeout or ExitSelfTest; 0 waits forever.
	Timeout time.Duration
	// TerminationMessagePath receives the reason of a non-zero exit; "" writes none.
	TerminationMessagePath string
	// ForcePoll polls the file instead of using inotify.
	ForcePoll bool
	// PollInterval is how often the file is polled when inotify is unavailable or disabled.
	PollInterval time.Duration
	// RetestInterval is how often the file is re-read and, while ready, the self-test re-run.
	RetestInterval time.Duration
	// ProgressInterval is how often a "still waiting" line is logged.
	ProgressInterval time.Duration
	// Clock is the time source (default: the real one).
	Clock Clock
	// NetnsID returns this process's network namespace identity (default OwnNetnsID).
	NetnsID func() (contract.NetnsID, error)
	// SelfTest proves the redirect works (default IstioRedirectTest()).
	SelfTest SelfTester
	// Log receives one line per state change (default: text to stderr).
	Log *slog.Logger
	// ReleaseRecord also reads and watches the release record in this network namespace (lo's
	// alias, written by the controller after it verified the rules) and releases on whichever of
	// the record and the annotations file first passes the same checks.
	ReleaseRecord bool
	// Record is the release record (default NetlinkRecord); unused unless ReleaseRecord.
	Record RecordSource
	// Interrupts, when set, is called once when the first look did not release the pod, before
	// the wait watches anything; the context it returns ends the wait (ExitError) when cancelled,
	// and stop is called when Run returns. The command passes signal.NotifyContext for SIGTERM and
	// SIGINT: subscribing to signals starts the runtime's signal thread, which a pod released at
	// the first look never needs (docs/wait.md).
	Interrupts func(ctx context.Context) (_ context.Context, stop func())
}

// Validate reports the first invalid field, naming it and its value.
func (c *Config) Validate() error {
	switch {
	case c.AnnotationsFile == "":
		return fmt.Errorf("annotations file %q: must not be empty", c.AnnotationsFile)
	case c.Timeout < 0:
		return fmt.Errorf("timeout %q: must not be negative (0 waits forever)", c.Timeout)
	case c.PollInterval < 0:
		return fmt.Errorf("poll interval %q: must not be negative", c.PollInterval)
	case c.RetestInterval < 0:
		return fmt.Errorf("retest interval %q: must not be negative", c.RetestInterval)
	case c.ProgressInterval < 0:
		return fmt.Errorf("progress interval %q: must not be negative", c.ProgressInterval)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.RetestInterval == 0 {
		c.RetestInterval = DefaultRetestInterval
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = DefaultProgressInterval
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.NetnsID == nil {
		c.NetnsID = OwnNetnsID
	}
	if c.SelfTest == nil {
		c.SelfTest = IstioRedirectTest()
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	switch {
	case !c.ReleaseRecord:
		c.Record = nil
	case c.Record == nil:
		c.Record = NetlinkRecord{}
	}
	return c
}

// Run waits until the pod may start and returns the exit code. It reacts to every change of the
// annotations file and logs one line per state change:
//   - no file, an incomplete file, no status, pending (with the controller's reason), or ready for
//     another network namespace (a stale annotation from a re-created sandbox): keep waiting;
//   - failed: write the controller's reason to the termination message and return ExitFailed;
//   - ready for this namespace: run the self-test for each programmed family (skipped when the pod's
//     interception mode is NONE and the controller programmed no rules) and return ExitReleased when
//     it passes; when it fails, re-test on every change and every RetestInterval.
//
// At Timeout it returns ExitSelfTest if the last state was ready with a failing self-test, else
// ExitTimeout, after writing why to the termination message.
func Run(ctx context.Context, cfg Config) ExitCode {
	if err := cfg.Validate(); err != nil {
		if cfg.Log != nil {
			cfg.Log.Error("invalid configuration", "err", err)
		}
		return ExitUsage
	}
	w := &waiter{cfg: cfg.withDefaults()}
	w.log = w.cfg.Log
	return w.run(ctx)
}

// waiter is the state of one Run.
type waiter struct {
	cfg      Config
	log      *slog.Logger
	self     contract.NetnsID
	cur      state
	lastData []byte
	haveData bool
	testErr  string // the last self-test failure in the current state, "" if none
	// recState is what the release record said last; lastAlias its text (valid when haveAlias).
	recState  state
	lastAlias string
	haveAlias bool
}

func (w *waiter) run(ctx context.Context) ExitCode {
	self, err := w.cfg.NetnsID()
	if err != nil {
		return w.exit(ExitError, "cannot read this container's network namespace identity: "+err.Error())
	}
	w.self = self
	timeoutText := "none (wait forever)"
	if w.cfg.Timeout > 0 {
		timeoutText = w.cfg.Timeout.String()
	}
	w.log.Info("waiting for the controller to program this pod's network namespace",
		"annotationsFile", w.cfg.AnnotationsFile, "netns", self.String(), "uid", os.Getuid(), "gid", os.Getgid(), "timeout", timeoutText, "releaseRecord", w.cfg.Record != nil)

	// First one look without watching anything: when the controller verified the rules before
	// this container started (the usual case with local discovery), the pod is released without
	// ever creating an inotify instance. Closing one that had a watch, which the kernel does at
	// exit, waits for an SRCU grace period of the whole node's fsnotify marks: 4–20 ms between
	// the last log line and the exit (docs/wait.md).
	// The look's lines are held until the signals are subscribed: once the wait has logged the
	// state it waits in, a SIGTERM ends it with ExitError and its reason.
	held := &heldLog{next: w.log.Handler()}
	w.log = slog.New(held)
	code, done := w.step(ctx, true)
	if !done && w.cfg.Interrupts != nil {
		var stop func()
		ctx, stop = w.cfg.Interrupts(ctx)
		defer stop()
	}
	w.log = slog.New(held.next)
	held.flush(ctx)
	if done {
		return code
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	clock := w.cfg.Clock
	// Subscribed before the loop's first read: a change after the look above is seen there.
	recChanges := w.watchRecord(ctx)
	changes := watchFile(ctx, w.cfg.AnnotationsFile, w.cfg.ForcePoll, w.cfg.PollInterval, w.log)
	var timeout <-chan time.Time
	if w.cfg.Timeout > 0 {
		timeout = clock.After(w.cfg.Timeout)
	}
	progress := clock.After(w.cfg.ProgressInterval)
	retest := clock.After(w.cfg.RetestInterval)
	start := clock.Now()
	force := false // the look above acted on the content it read
	for {
		if code, done := w.step(ctx, force); done {
			return code
		}
		force = false
		select {
		case <-ctx.Done():
			return w.exit(ExitError, fmt.Sprintf("interrupted (%v) while %s", context.Cause(ctx), w.describe()))
		case <-timeout:
			return w.timedOut()
		case <-changes:
		case <-recChanges:
		case <-retest:
			retest = clock.After(w.cfg.RetestInterval)
			force = true
		case <-progress:
			progress = clock.After(w.cfg.ProgressInterval)
			w.log.Info("still waiting", "elapsed", clock.Now().Sub(start).Round(time.Second).String(), "state", w.describe())
		}
	}
}

// step reads and evaluates the file and the release record, and acts on them: the record when it
// is ready for this namespace, else the file. Unchanged content is skipped unless force.
func (w *waiter) step(ctx context.Context, force bool) (ExitCode, bool) {
	data, err := readAnnotations(w.cfg.AnnotationsFile)
	var alias string
	var aliasErr error
	if w.cfg.Record != nil {
		alias, aliasErr = w.cfg.Record.Read()
	}
	if err == nil && w.haveData && !force && bytes.Equal(data, w.lastData) &&
		(w.cfg.Record == nil || aliasErr == nil && w.haveAlias && alias == w.lastAlias) {
		return 0, false
	}
	w.lastData, w.haveData = data, err == nil
	w.lastAlias, w.haveAlias = alias, aliasErr == nil
	s := evaluate(data, err, w.self)
	if w.cfg.Record != nil {
		if rs := w.recordState(alias, aliasErr, podInterception(data, err)); rs.phase == phaseReady {
			if s.phase == phaseStale && s != w.cur {
				w.log.Warn(s.msg) // the annotation of the old sandbox, superseded by this one's record
			}
			s = rs
		}
	}
	if s != w.cur {
		w.cur, w.testErr = s, ""
		w.logState()
	}
	switch s.phase {
	case phaseFailed:
		return w.exit(ExitFailed, "the controller reports this pod's configuration invalid: "+s.reason), true
	case phaseReady:
		if s.noCapture {
			w.log.Info("released: interception mode is NONE and the controller programmed no rules: nothing to test")
			return ExitReleased, true
		}
		for _, f := range s.fam.list() {
			if err := w.cfg.SelfTest.Test(ctx, f); err != nil {
				if err.Error() != w.testErr {
					w.testErr = err.Error()
					w.log.Warn("the redirect self-test fails: re-testing on every annotation change and every "+w.cfg.RetestInterval.String(), "err", err)
				}
				return 0, false
			}
		}
		w.log.Info("released: the redirect self-test passed", "netns", w.self.String(), "families", familiesText(s.fam))
		return ExitReleased, true
	}
	return 0, false
}

func (w *waiter) logState() {
	args := []any{}
	if w.cur.reason != "" {
		args = append(args, "reason", w.cur.reason)
	}
	switch w.cur.phase {
	case phaseStale:
		w.log.Warn(w.cur.msg, args...)
	case phaseReady:
		w.log.Info(w.cur.msg, append(args, "netns", w.self.String(), "families", familiesText(w.cur.fam))...)
	case phaseFailed:
		// exit logs it
	default:
		w.log.Info(w.cur.msg, args...)
	}
}

// describe is the current state in one phrase, with the controller's reason and the self-test error.
func (w *waiter) describe() string {
	d := w.cur.msg
	if d == "" {
		d = "waiting: annotations file not read yet"
	}
	if w.cur.reason != "" {
		d += " (reason: " + w.cur.reason + ")"
	}
	if w.testErr != "" {
		d += "; " + w.testErr
	}
	return d
}

func (w *waiter) timedOut() ExitCode {
	if w.cur.phase == phaseReady && w.testErr != "" {
		return w.exit(ExitSelfTest, fmt.Sprintf("timed out after %s: the controller reports ready for this network namespace, "+
			"but the redirect self-test fails: %s", w.cfg.Timeout, w.testErr))
	}
	return w.exit(ExitTimeout, fmt.Sprintf("timed out after %s %s", w.cfg.Timeout, w.describe()))
}

// exit logs msg, writes it as the termination message, and returns code.
func (w *waiter) exit(code ExitCode, msg string) ExitCode {
	w.log.Error(msg, "exitCode", int(code))
	if p := w.cfg.TerminationMessagePath; p != "" {
		if err := os.WriteFile(p, []byte(truncate(msg, maxTerminationMessage)), 0o644); err != nil {
			w.log.Warn("cannot write the termination message", "path", p, "err", err)
		}
	}
	return code
}

// truncate shortens s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func familiesText(f families) string {
	var s []string
	for _, x := range f.list() {
		s = append(s, string(x))
	}
	return strings.Join(s, ",")
}

package initwait

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/record"
)

// fakeRecord is a RecordSource holding an alias; set notifies the watcher as the kernel does.
type fakeRecord struct {
	mu       sync.Mutex
	alias    string
	err      error
	watchErr error
	notify   func()
	watches  int // calls of Watch
}

var _ RecordSource = (*fakeRecord)(nil)

func (f *fakeRecord) Read() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.alias, f.err
}

func (f *fakeRecord) Watch(_ context.Context, notify func()) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watches++
	if f.watchErr != nil {
		return f.watchErr
	}
	f.notify = notify
	return nil
}

func (f *fakeRecord) set(alias string) {
	f.mu.Lock()
	f.alias = alias
	n := f.notify
	f.mu.Unlock()
	if n != nil {
		n()
	}
}

func recordFor(id contract.NetnsID, families string) string {
	return record.Ready(id, "0123456789abcdef", families).String()
}

func withRecord(r *fakeRecord) func(*Config) {
	return func(c *Config) { c.ReleaseRecord, c.Record = true, r }
}

func TestEvaluateRecord(t *testing.T) {
	other := contract.NetnsID{Kind: contract.KindCookie, Value: 4098}
	w := &waiter{self: testSelf}
	for _, tc := range []struct {
		name         string
		alias        string
		readErr      error
		interception string
		phase        phase
		msg          string
		fam          families
		noCapture    bool
	}{
		{name: "none", phase: phaseWaiting, msg: "no release record"},
		{name: "unreadable", readErr: errors.New("EPERM"), phase: phaseWaiting, msg: "cannot read the release record: EPERM"},
		{name: "someone else's alias", alias: "uplink", phase: phaseWaiting, msg: "release record ignored"},
		{name: "unknown version", alias: strings.Replace(recordFor(testSelf, "ipv4"), "pnc1", "pnc2", 1), phase: phaseWaiting, msg: "unknown version"},
		{name: "invalid", alias: "pnc1 status=ready", phase: phaseWaiting, msg: "invalid release record"},
		{name: "another namespace's", alias: recordFor(other, "ipv4"), phase: phaseStale, msg: "release record is stale"},
		{name: "ready", alias: recordFor(testSelf, "ipv4"), phase: phaseReady, msg: "release record reports ready", fam: families{v4: true}},
		{name: "ready dual", alias: recordFor(testSelf, "ipv4,ipv6"), phase: phaseReady, fam: families{v4: true, v6: true}},
		{name: "rules none, pod not NONE: self-test", alias: record.Ready(testSelf, "none", "ipv4").String(), interception: "REDIRECT",
			phase: phaseReady, fam: families{v4: true}},
		{name: "rules none, pod NONE: nothing to test", alias: record.Ready(testSelf, "none", "ipv4").String(), interception: istioapi.InterceptionNone,
			phase: phaseReady, fam: families{v4: true}, noCapture: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := w.evaluateRecord(tc.alias, tc.readErr, tc.interception)
			if s.phase != tc.phase || !strings.Contains(s.msg, tc.msg) || s.fam != tc.fam || s.noCapture != tc.noCapture {
				t.Errorf("evaluateRecord(%q) = %+v; want phase %d, msg containing %q, families %+v, noCapture %v",
					tc.alias, s, tc.phase, tc.msg, tc.fam, tc.noCapture)
			}
		})
	}
}

// TestRecordPresentAtStartReleases: no annotations file at all (the kubelet has not refreshed it),
// the record is there: released after the self-test.
func TestRecordPresentAtStartReleases(t *testing.T) {
	r := &fakeRecord{alias: recordFor(testSelf, contract.FamiliesDual)}
	h := startRun(t, nil, withRecord(r))
	h.exit(ExitReleased)
	if got := h.tester.called(); !slices.Equal(got, []Family{IPv4, IPv6}) {
		t.Errorf("self-tests %v, want ipv4, ipv6", got)
	}
	if !strings.Contains(h.log.String(), "release record reports ready") {
		t.Errorf("the log does not say the record released the pod:\n%s", h.log)
	}
}

// TestRecordWrittenWhileWaiting: the record's notification alone wakes the wait.
func TestRecordWrittenWhileWaiting(t *testing.T) {
	r := &fakeRecord{}
	h := startRun(t, map[string]string{contract.KeyStatus: "pending"}, withRecord(r))
	h.sync()
	h.running()
	r.set(recordFor(testSelf, contract.FamiliesIPv4))
	h.exit(ExitReleased)
}

// TestRecordSameChecksAsAnnotations: a record the wait must not trust keeps it waiting, the
// self-test gates the record's release as it gates the annotation's, and the annotation still
// releases (version skew: an old controller writes no record, a new one a version this binary
// does not know).
func TestRecordSameChecksAsAnnotations(t *testing.T) {
	other := contract.NetnsID{Kind: contract.KindCookie, Value: 4098}
	for _, tc := range []struct {
		name, alias, log string
	}{
		{"another namespace's identity", recordFor(other, "ipv4"), "release record is stale"},
		{"unknown version", strings.Replace(recordFor(testSelf, "ipv4"), "pnc1", "pnc9", 1), "unknown version"},
		{"not a record", "my-loopback", "release record ignored"},
		{"old controller: no record", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &fakeRecord{alias: tc.alias}
			h := startRun(t, map[string]string{contract.KeyStatus: "pending"}, withRecord(r))
			if tc.log != "" {
				h.waitLog(tc.log, 1)
			}
			h.sync()
			h.running()
			if got := h.tester.called(); len(got) != 0 {
				t.Fatalf("self-test run on an untrusted record: %v", got)
			}
			h.write(ready("cookie:4097"))
			h.exit(ExitReleased)
		})
	}
	t.Run("self-test fails", func(t *testing.T) {
		r := &fakeRecord{alias: recordFor(testSelf, "ipv4")}
		h := startRun(t, nil, withRecord(r))
		h.tester.setErr(errors.New("not redirected"))
		h.waitLog("self-test fails", 1)
		h.running()
		h.tester.setErr(nil)
		h.clock.fire(t, testRetest)
		h.exit(ExitReleased)
	})
}

// TestRecordOffIgnoresIt: --release-record=false never reads the record.
func TestRecordOffIgnoresIt(t *testing.T) {
	r := &fakeRecord{alias: recordFor(testSelf, "ipv4")}
	h := startRun(t, map[string]string{contract.KeyStatus: "pending"}, func(c *Config) { c.Record = r })
	h.sync()
	h.running()
	h.write(ready("cookie:4097"))
	h.exit(ExitReleased)
}

// TestRecordUnwatchableFallsBack: no netlink socket: the annotations file still releases.
func TestRecordUnwatchableFallsBack(t *testing.T) {
	r := &fakeRecord{watchErr: errors.New("socket: EACCES")}
	h := startRun(t, map[string]string{contract.KeyStatus: "pending"}, withRecord(r))
	h.waitLog("cannot watch the release record", 1)
	h.write(ready("cookie:4097"))
	h.exit(ExitReleased)
}

// TestFailedComesFromTheAnnotations: a failed annotation ends the wait even with the record on.
func TestFailedComesFromTheAnnotations(t *testing.T) {
	r := &fakeRecord{}
	h := startRun(t, map[string]string{contract.KeyStatus: "failed", contract.KeyReason: "bad port"}, withRecord(r))
	h.exit(ExitFailed)
}

// TestRecordSupersedesAStaleAnnotation: a re-created sandbox's wait container finds the old
// sandbox's ready annotation (stale, logged) and this namespace's record: released by the record.
func TestRecordSupersedesAStaleAnnotation(t *testing.T) {
	r := &fakeRecord{alias: recordFor(testSelf, contract.FamiliesIPv4)}
	h := startRun(t, ready("cookie:1"), withRecord(r))
	h.exit(ExitReleased)
	if log := h.log.String(); !strings.Contains(log, "stale") || !strings.Contains(log, "release record reports ready") {
		t.Errorf("the log does not show the stale annotation superseded by the record:\n%s", log)
	}
}

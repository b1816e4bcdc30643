package initwait

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// TestWatchPollWhenInotifyUnavailable simulates the per-UID inotify limit being exhausted (every
// wait container on a node runs as the same host UID).
func TestWatchPollWhenInotifyUnavailable(t *testing.T) {
	orig := inotifyInit1
	inotifyInit1 = func(int) (int, error) { return -1, unix.EMFILE }
	t.Cleanup(func() { inotifyInit1 = orig })

	dir, file := annotationsDir(t)
	ch, buf := startWatch(t, file, false, 5*time.Millisecond)
	writeAndWait(t, ch, dir, map[string]string{"status": "ready"}, "a swap without inotify")
	if log := buf.String(); !strings.Contains(log, "inotify unavailable") || !strings.Contains(log, "too many open files") {
		t.Errorf("log does not say why it polls:\n%s", log)
	}
}

// TestRunReleasedAtStartWatchesNothing: a wait that finds the pod released at its first look (the
// annotations or the record ready for this namespace) exits without creating an inotify instance
// or subscribing to the record, whose closing at exit would wait for a kernel grace period; one
// that finds it pending watches both.
func TestRunReleasedAtStartWatchesNothing(t *testing.T) {
	orig := inotifyInit1
	t.Cleanup(func() { inotifyInit1 = orig })
	var inits atomic.Int32
	inotifyInit1 = func(flags int) (int, error) {
		inits.Add(1)
		return orig(flags)
	}
	for _, tc := range []struct {
		name    string
		initial map[string]string
		record  string
		watches int
	}{
		{"ready annotations", ready(testSelf.String()), "", 0},
		{"ready record", nil, recordFor(testSelf, contract.FamiliesIPv4), 0},
		{"pending", map[string]string{contract.KeyStatus: "pending"}, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inits.Store(0)
			r := &fakeRecord{alias: tc.record}
			h := startRun(t, tc.initial, withRecord(r))
			if tc.watches > 0 {
				h.sync()
				h.write(ready(testSelf.String()))
			}
			h.exit(ExitReleased)
			r.mu.Lock()
			defer r.mu.Unlock()
			if int(inits.Load()) != tc.watches || r.watches != tc.watches {
				t.Errorf("%d inotify instances and %d record watches, want %d of each; log:\n%s", inits.Load(), r.watches, tc.watches, h.log)
			}
		})
	}
}

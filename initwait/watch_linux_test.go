package initwait

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

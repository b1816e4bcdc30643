package initwait

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/initwait/waittest"
)

// guard bounds every wait in these tests: a failure guard against hangs, not a speed assertion.
const guard = 20 * time.Second

// never is a poll interval long enough that only inotify can deliver a notification in a test.
const never = time.Hour

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t testing.TB) (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf)
		}
	})
	return slog.New(slog.NewTextHandler(buf, nil)), buf
}

// waitNotified fails the test unless ch delivers before the guard.
func waitNotified(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(guard):
		t.Fatalf("no notification after %s", what)
	}
}

// writeAndWait publishes ann in dir and waits for notifications until the file reads it: the
// write must be followed by at least one notification.
func writeAndWait(t testing.TB, ch <-chan struct{}, dir string, ann map[string]string, what string) {
	t.Helper()
	drain(ch)
	if err := waittest.WriteAnnotations(dir, ann); err != nil {
		t.Fatal(err)
	}
	want := waittest.Format(ann)
	deadline := time.After(guard)
	for {
		select {
		case <-ch:
		case <-deadline:
			got, err := os.ReadFile(filepath.Join(dir, "annotations"))
			t.Fatalf("after %s no notification came with the file reading %q (it reads %q, %v)", what, want, got, err)
		}
		if got, err := os.ReadFile(filepath.Join(dir, "annotations")); err == nil && bytes.Equal(got, want) {
			return
		}
	}
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func annotationsDir(t testing.TB) (dir, file string) {
	dir = filepath.Join(t.TempDir(), "podinfo")
	return dir, filepath.Join(dir, "annotations")
}

func startWatch(t testing.TB, file string, forcePoll bool, interval time.Duration) (<-chan struct{}, *syncBuffer) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log, buf := testLogger(t)
	return watchFile(ctx, file, forcePoll, interval, log), buf
}

func TestWatchSeesSymlinkSwap(t *testing.T) {
	dir, file := annotationsDir(t)
	if err := waittest.WriteAnnotations(dir, map[string]string{"status": "pending"}); err != nil {
		t.Fatal(err)
	}
	// Polling would take an hour: only inotify can deliver these.
	ch, _ := startWatch(t, file, false, never)
	for _, status := range []string{"ready", "failed", "pending"} {
		writeAndWait(t, ch, dir, map[string]string{"status": status}, "a swap to "+status)
	}
}

func TestWatchSeesPlainWrite(t *testing.T) {
	dir, file := annotationsDir(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ch, _ := startWatch(t, file, false, never)
	if err := os.WriteFile(file, []byte(`a="1"`), 0o644); err != nil {
		t.Fatal(err)
	}
	waitNotified(t, ch, "a write in place")
}

func TestWatchDirectoryCreatedLater(t *testing.T) {
	dir, file := annotationsDir(t)
	ch, buf := startWatch(t, file, false, 10*time.Millisecond)
	writeAndWait(t, ch, dir, map[string]string{"status": "ready"}, "creating the directory")
	// Watched by inotify from now on.
	writeAndWait(t, ch, dir, map[string]string{"status": "failed"}, "a swap in the new directory")
	if !strings.Contains(buf.String(), "does not exist yet") {
		t.Errorf("log does not say the directory is missing:\n%s", buf)
	}
}

func TestWatchDirectoryDeletedAndRecreated(t *testing.T) {
	dir, file := annotationsDir(t)
	if err := waittest.WriteAnnotations(dir, map[string]string{"status": "pending"}); err != nil {
		t.Fatal(err)
	}
	ch, _ := startWatch(t, file, false, 10*time.Millisecond)
	for round := range 3 {
		drain(ch)
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		waitNotified(t, ch, "deleting the directory")
		ann := map[string]string{"status": "ready", "round": strconv.Itoa(round)}
		writeAndWait(t, ch, dir, ann, "re-creating the directory")
		// The new directory is watched again: a later swap is seen too.
		ann["later"] = "swap"
		writeAndWait(t, ch, dir, ann, "a swap in the re-created directory")
	}
}

func TestWatchDirectoryRenamedAway(t *testing.T) {
	dir, file := annotationsDir(t)
	if err := waittest.WriteAnnotations(dir, map[string]string{"status": "pending"}); err != nil {
		t.Fatal(err)
	}
	ch, _ := startWatch(t, file, false, 10*time.Millisecond)
	drain(ch)
	if err := os.Rename(dir, dir+".old"); err != nil {
		t.Fatal(err)
	}
	waitNotified(t, ch, "renaming the directory away")
	writeAndWait(t, ch, dir, map[string]string{"status": "ready"}, "creating a new directory at the old path")
	writeAndWait(t, ch, dir, map[string]string{"status": "failed"}, "a swap in the new directory")
}

func TestWatchPollWhenForced(t *testing.T) {
	dir, file := annotationsDir(t)
	ch, buf := startWatch(t, file, true, 5*time.Millisecond)
	writeAndWait(t, ch, dir, map[string]string{"status": "ready"}, "a swap, polling")
	if !strings.Contains(buf.String(), "inotify disabled by option") {
		t.Errorf("log does not say it polls:\n%s", buf)
	}
}

// BenchmarkWatchSwapLatency measures the time from the kubelet-style "..data" rename to the
// notification, with inotify and with the 100 ms poll fallback.
func BenchmarkWatchSwapLatency(b *testing.B) {
	for _, mode := range []struct {
		name string
		poll bool
	}{{"inotify", false}, {"poll-100ms", true}} {
		b.Run(mode.name, func(b *testing.B) {
			dir, file := annotationsDir(b)
			if err := waittest.WriteAnnotations(dir, map[string]string{"n": "0"}); err != nil {
				b.Fatal(err)
			}
			ch, _ := startWatch(b, file, mode.poll, DefaultPollInterval)
			var samples []time.Duration
			for i := 0; i < max(b.N, 20); i++ {
				start := time.Now()
				writeAndWait(b, ch, dir, map[string]string{"n": strconv.Itoa(i)}, "a swap")
				samples = append(samples, time.Since(start))
			}
			reportMedian(b, samples)
		})
	}
}

// reportMedian reports the median and the worst of samples in milliseconds, and no ns/op (an
// iteration's cost is not the figure of interest).
func reportMedian(b *testing.B, samples []time.Duration) {
	slices.Sort(samples)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1000, "ms-max")
	b.ReportMetric(float64(len(samples)), "samples")
}

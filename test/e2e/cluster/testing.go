package cluster

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// EnvEnable is the environment variable that turns the control-plane tests on outside CI.
const EnvEnable = "E2E"

// Enabled reports whether tests that need the control plane should run: E2E or CI is set (non-empty).
func Enabled() bool { return os.Getenv(EnvEnable) != "" || os.Getenv("CI") != "" }

// Require skips the test unless Enabled. In CI it never skips: a missing tool makes Start fail the
// test instead.
func Require(t testing.TB) {
	t.Helper()
	if !Enabled() {
		t.Skipf("needs the local control plane (kube-apiserver, etcd built by test/tools/build.sh): set %s=1; always runs when CI is set", EnvEnable)
	}
}

// StartForTest calls Require, then Start, and stops the cluster when the test and its subtests
// end, printing the tail of the etcd and kube-apiserver logs first if the test failed. Progress goes
// to the test log unless opts.Log is set.
func StartForTest(t testing.TB, opts Options) *Cluster {
	t.Helper()
	Require(t)
	if opts.Log == nil {
		opts.Log = testLog{t}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute) // a cold tool build fits
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start the control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane logs:%s", c.LogTail(40))
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop the control plane: %v", err)
		}
	})
	return c
}

// testLog writes progress lines to the test log.
type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

package realnode

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
)

// StartForTest skips the test unless E2E or CI is set (cluster.Require) and, under CI, fails it
// unless it runs as root (testutil.RequireRoot); then it starts a node (progress in the test log
// unless opts.Log is set) and stops it when the test ends, printing the logs' tails first if the
// test failed.
func StartForTest(t testing.TB, opts Options) *Node {
	t.Helper()
	cluster.Require(t)
	testutil.RequireRoot(t)
	if opts.Log == nil {
		opts.Log = testLog{t}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute) // a cold tool build fits
	defer cancel()
	n, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start the real node: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("real node logs:%s", n.LogTail(40))
		}
		if err := n.Stop(); err != nil {
			t.Errorf("stop the real node: %v", err)
		}
	})
	return n
}

type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

package initwait

import (
	"context"
	"errors"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
)

// inFreshNetns runs fn on a locked OS thread moved into a new, throwaway network namespace with lo
// up and the given commands run there (as argv, each with its stdin). The thread is never unlocked:
// the runtime discards it when the goroutine ends, and the namespace goes with it.
func inFreshNetns(t *testing.T, cmds [][]string, stdin []string, fn func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		for i, argv := range cmds {
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Stdin = strings.NewReader(stdin[i])
			if out, err := cmd.CombinedOutput(); err != nil {
				errc <- &exec.Error{Name: strings.Join(argv, " ") + ": " + string(out), Err: err}
				return
			}
		}
		fn()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestRedirectTestPassesWhenRedirected runs the real test against a REDIRECT rule (for every UID,
// since the test runs as root) in a namespace of its own, for both families.
func TestRedirectTestPassesWhenRedirected(t *testing.T) {
	testutil.RequireRoot(t)
	const v4 = "*nat\n-A OUTPUT -o lo -d 127.0.0.6/32 -p tcp -j REDIRECT --to-ports 15006\nCOMMIT\n"
	const v6 = "*nat\n-A OUTPUT -o lo -d ::6/128 -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n"
	var errs [2]error
	inFreshNetns(t, [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "-6", "addr", "add", "::6/128", "dev", "lo"},
		{"iptables-nft-restore"},
		{"ip6tables-nft-restore"},
	}, []string{"", "", v4, v6}, func() {
		r := IstioRedirectTest()
		errs[0] = r.Test(context.Background(), IPv4)
		errs[1] = r.Test(context.Background(), IPv6)
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", []Family{IPv4, IPv6}[i], err)
		}
	}
}

// TestRedirectTestBoundedWhenDropped: when a rule drops the connection (no answer at all), the
// connect fails at the test's timeout, and a cancelled context ends it sooner.
func TestRedirectTestBoundedWhenDropped(t *testing.T) {
	testutil.RequireRoot(t)
	const v4 = "*filter\n-A OUTPUT -o lo -d 127.0.0.6/32 -p tcp -j DROP\nCOMMIT\n"
	var timedOut, cancelled error
	var timedOutAfter, cancelledAfter time.Duration
	inFreshNetns(t, [][]string{{"ip", "link", "set", "lo", "up"}, {"iptables-nft-restore"}}, []string{"", v4}, func() {
		r := IstioRedirectTest()
		r.Timeout = 300 * time.Millisecond
		start := time.Now()
		timedOut = r.Test(context.Background(), IPv4)
		timedOutAfter = time.Since(start)

		r.Timeout = time.Minute
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start = time.Now()
		cancelled = r.Test(ctx, IPv4)
		cancelledAfter = time.Since(start)
	})
	if timedOut == nil || !strings.Contains(timedOut.Error(), "connection to 127.0.0.6:15002 was not redirected: connect: timed out") {
		t.Errorf("dropped connection: %v, want a connect timeout", timedOut)
	}
	if timedOutAfter < 300*time.Millisecond || timedOutAfter > 30*time.Second {
		t.Errorf("dropped connection: failed after %v, want at the 300ms timeout", timedOutAfter)
	}
	if !errors.Is(cancelled, context.DeadlineExceeded) {
		t.Errorf("cancelled context: %v, want context.DeadlineExceeded", cancelled)
	}
	if cancelledAfter > 30*time.Second {
		t.Errorf("cancelled context: returned after %v, want soon after the 100ms deadline", cancelledAfter)
	}
}

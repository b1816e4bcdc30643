package netns

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
)

func TestHostNamespaceNeverReturned(t *testing.T) {
	testutil.RequireRoot(t)
	t.Run("pod IP on the host", func(t *testing.T) {
		host := &sandbox{Path: "/proc/self/ns/net", host: true}
		ip := newIPv4()
		host.addVeth(t, ip)
		f := newFinder(t, Options{})
		err := findErr(t, f, newUID(), []netip.Addr{ip}, ErrHostNamespace)
		if !strings.Contains(err.Error(), "host network namespace holds ["+ip.String()+"]") {
			t.Errorf("error does not say the host holds the IP: %v", err)
		}
	})
	t.Run("hostNetwork pod processes", func(t *testing.T) {
		uid := newUID()
		hp := newProc(t, true, podCgroup(t, uid))
		ip := newIPv4()
		hp.addVeth(t, ip)
		f := newFinder(t, only(StrategyProcUID))
		err := findErr(t, f, uid, []netip.Addr{ip}, ErrHostNamespace)
		if !strings.Contains(err.Error(), "hostNetwork") {
			t.Errorf("error does not mention hostNetwork: %v", err)
		}
	})
	t.Run("named entry pinning the host namespace", func(t *testing.T) {
		host := &sandbox{Path: "/proc/self/ns/net", host: true}
		ip := newIPv4()
		host.addVeth(t, ip)
		dir := t.TempDir()
		host.pinNamed(t, dir)
		f := newFinder(t, Options{Strategies: []Strategy{StrategyNamed, StrategyCNICache}, NetnsDirs: []string{dir}, CNIResultsDir: t.TempDir()})
		err := findErr(t, f, newUID(), []netip.Addr{ip}, ErrHostNamespace)
		if !strings.Contains(err.Error(), "1 naming the host's, skipped") {
			t.Errorf("error does not say the named entry is the host's: %v", err)
		}
	})
}

func TestNamespaceWithoutPodIPRejected(t *testing.T) {
	testutil.RequireRoot(t)
	uid := newUID()
	s := newProc(t, false, podCgroup(t, uid))
	held := newIPv4()
	s.addVeth(t, held)
	dir := t.TempDir()
	s.pinNamed(t, dir)

	f := newFinder(t, Options{NetnsDirs: []string{dir}, CNIResultsDir: t.TempDir()})
	want := newIPv4()
	err := findErr(t, f, uid, []netip.Addr{want}, ErrNotFound)
	for _, sub := range []string{"named: 1 namespaces in " + dir, "cni-cache: 0 files in", "proc-uid:", "proc-ip:", "holds [" + held.String() + "]", want.String()} {
		if !strings.Contains(err.Error(), sub) {
			t.Errorf("error lacks %q: %v", sub, err)
		}
	}
	if errors.Is(err, ErrHostNamespace) || errors.Is(err, ErrAmbiguous) {
		t.Errorf("error is also host/ambiguous: %v", err)
	}
}

func TestFindBadArguments(t *testing.T) {
	testutil.RequireRoot(t)
	f := newFinder(t, Options{})
	if _, err := f.Find(context.Background(), "pod/../x", []netip.Addr{newIPv4()}); err == nil || !strings.Contains(err.Error(), `pod UID "pod/../x"`) {
		t.Errorf("bad UID: %v", err)
	}
	if _, err := f.Find(context.Background(), newUID(), nil); err == nil || !strings.Contains(err.Error(), "no pod IPs") {
		t.Errorf("no IPs: %v", err)
	}
	if _, err := New(Options{ProcDir: "/nonexistent-" + randHex(6)}); err == nil || !strings.Contains(err.Error(), "proc directory") {
		t.Errorf("bad proc dir: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Find(ctx, newUID(), []netip.Addr{newIPv4()}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

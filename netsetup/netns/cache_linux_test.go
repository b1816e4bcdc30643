package netns

import (
	"context"
	"net/netip"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
)

func TestCache(t *testing.T) {
	testutil.RequireRoot(t)
	uid := newUID()
	s := newProc(t, false, podCgroup(t, uid))
	ip, ip2 := newIPv4(), newIPv4()
	s.addVeth(t, ip, ip2)

	fds := OpenFDs()
	f := newFinder(t, Options{Strategies: []Strategy{StrategyProcUID}, Cache: true})
	fds++ // the Finder's own namespace
	stats := func(wantHits, wantMisses int64) {
		t.Helper()
		if f.hits.Load() != wantHits || f.misses.Load() != wantMisses {
			t.Errorf("cache hits %d, misses %d; want %d, %d", f.hits.Load(), f.misses.Load(), wantHits, wantMisses)
		}
	}

	h1 := mustFind(t, f, uid, []netip.Addr{ip}, s.key(t))
	h2 := mustFind(t, f, uid, []netip.Addr{ip}, s.key(t))
	stats(1, 1)
	if h1 == h2 || f.Cached() != 1 || OpenFDs() != fds+1 {
		t.Errorf("cached %d, open fds %d (want 1, %d): one fd shared by the cache and both handles", f.Cached(), OpenFDs(), fds+1)
	}
	h1.Close()
	if err := h2.Do(func() error { return nil }); err != nil {
		t.Errorf("closing one handle broke another: %v", err)
	}
	h2.Close()
	if OpenFDs() != fds+1 {
		t.Errorf("open fds %d with the handles closed, want the cache's: %d", OpenFDs(), fds+1)
	}

	// Another set of IPs: dropped and found again.
	mustFind(t, f, uid, []netip.Addr{ip, ip2}, s.key(t)).Close()
	stats(1, 2)
	mustFind(t, f, uid, []netip.Addr{ip2, ip}, s.key(t)).Close()
	stats(2, 2)

	// The namespace no longer holds the IP: dropped, not found.
	s.delAddr(t, ip)
	s.delAddr(t, ip2)
	findErr(t, f, uid, []netip.Addr{ip, ip2}, ErrNotFound)
	stats(2, 3)
	if f.Cached() != 0 {
		t.Errorf("cached %d after the IP left, want 0", f.Cached())
	}

	// The sandbox is re-created (same IP, new namespace): the old one is not served from the cache.
	s.addVeth(t, ip)
	mustFind(t, f, uid, []netip.Addr{ip}, s.key(t)).Close()
	s2 := newProc(t, false, podCgroup(t, uid))
	s2.addVeth(t, ip)
	s.stop() // the old namespace lives on through the cache's fd, still holding the IP
	h := mustFind(t, f, uid, []netip.Addr{ip}, s2.key(t))
	stats(2, 5)

	// Forget closes the cached fd.
	h.Close()
	if f.Cached() != 1 || OpenFDs() != fds+1 {
		t.Errorf("cached %d, open fds %d; want 1, %d", f.Cached(), OpenFDs(), fds+1)
	}
	f.Forget(uid)
	f.Forget(uid)
	if f.Cached() != 0 || OpenFDs() != fds {
		t.Errorf("after Forget: cached %d, open fds %d; want 0, %d", f.Cached(), OpenFDs(), fds)
	}
}

// TestCacheConcurrent runs Find and Forget for one pod from several goroutines (run with -race):
// every handle stays usable until closed, and no fd is left behind.
func TestCacheConcurrent(t *testing.T) {
	testutil.RequireRoot(t)
	uid, s, ip := newPod(t)
	dir := t.TempDir()
	s.pinNamed(t, dir)

	fds := OpenFDs()
	f, err := New(Options{NetnsDirs: []string{dir}, CNIResultsDir: t.TempDir(), Cache: true})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			var err error
			for i := range 20 {
				var h *Handle
				if h, err = f.Find(context.Background(), uid, []netip.Addr{ip}); err != nil {
					break
				}
				if g%2 == 0 && i%5 == 0 {
					f.Forget(uid)
				}
				err = h.Do(func() error { return nil })
				h.Close()
				if err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	f.Close()
	if OpenFDs() != fds {
		t.Errorf("open fds %d after closing everything, want %d", OpenFDs(), fds)
	}
}

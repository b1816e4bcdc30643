package netns

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// hostReader opens an address reader in the test's own namespace.
func hostReader(t testing.TB) *addrReader {
	t.Helper()
	host, err := contract.CurrentNetnsID()
	if err != nil {
		t.Fatal(err)
	}
	r, err := newAddrReader(host)
	if err != nil {
		t.Fatalf("newAddrReader: %v (this kernel should list addresses by nsid)", err)
	}
	t.Cleanup(r.close)
	return r
}

// ipIn runs ip(8) inside the namespace pinned at path.
func ipIn(t testing.TB, path string, args ...string) {
	t.Helper()
	run(t, "nsenter", append([]string{"--net=" + path, "ip"}, args...)...)
}

func sortedAddrs(a []netip.Addr) []netip.Addr {
	a = slices.Clone(a)
	slices.SortFunc(a, netip.Addr.Compare)
	return a
}

// TestAddrReaderMatchesInside: the reader lists exactly what a dump made inside the namespace
// lists, for namespaces with no address at all, only loopback, a dual-stack veth, and a
// point-to-point address with a peer; never the reader's own namespace's addresses.
func TestAddrReaderMatchesInside(t *testing.T) {
	testutil.RequireRoot(t)
	r := hostReader(t)

	empty := newNamed(t) // lo down: no address at all
	loopback := newNamed(t)
	ipIn(t, loopback.Path, "link", "set", "lo", "up")
	dual := newNamed(t)
	v4, v6 := newIPv4(), newIPv6()
	dual.addVeth(t, v4, v6)
	ptp := newNamed(t)
	local, peer := newIPv4(), newIPv4()
	ipIn(t, ptp.Path, "addr", "add", local.String(), "peer", prefix(peer), "dev", "lo")

	for _, c := range []struct {
		name string
		s    *sandbox
		want []netip.Addr // among the addresses (nil: none at all)
	}{
		{"no address", empty, nil},
		{"loopback", loopback, []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}},
		{"dual-stack veth", dual, []netip.Addr{v4, v6}},
		{"point-to-point", ptp, []netip.Addr{local}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, err := Open(c.s.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			got, err := r.addrs(h)
			if err != nil {
				t.Fatal(err)
			}
			inside, err := h.Addrs()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sortedAddrs(got), sortedAddrs(inside)) {
				t.Fatalf("reader %v, inside %v", got, inside)
			}
			if c.want == nil && len(got) != 0 {
				t.Fatalf("reader %v, want none (the host's addresses?)", got)
			}
			for _, w := range c.want {
				if !slices.Contains(got, w) {
					t.Errorf("reader %v lacks %s", got, w)
				}
			}
			if c.s == ptp && slices.Contains(got, peer) {
				t.Errorf("reader %v lists the peer address %s", got, peer)
			}
		})
	}
}

// TestAddrReaderNsid: a namespace without nsid gets one, once; the handle remembers it; a reader
// made in another namespace is refused (nsids are relative to the reader's namespace).
func TestAddrReaderNsid(t *testing.T) {
	testutil.RequireRoot(t)
	r := hostReader(t)
	s := newNamed(t)
	h, err := Open(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if id, err := r.getNsid(int(h.Fd())); err != nil || id != unix.NETNSA_NSID_NOT_ASSIGNED {
		t.Fatalf("nsid of a new namespace = %d, %v; want none assigned", id, err)
	}
	id, err := h.netnsid(r)
	if err != nil || id < 0 {
		t.Fatalf("netnsid = %d, %v", id, err)
	}
	if again, err := r.getNsid(int(h.Fd())); err != nil || again != id {
		t.Fatalf("nsid read back = %d, %v; want %d", again, err, id)
	}
	h2, err := Open(s.Path) // another fd: the kernel's nsid, not a cached one
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	if id2, err := h2.netnsid(r); err != nil || id2 != id {
		t.Fatalf("nsid through a second handle = %d, %v; want %d", id2, err, id)
	}
	h2.Close()
	if _, err := h2.netnsid(r); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("netnsid of a closed handle: %v", err)
	}

	host, _ := contract.CurrentNetnsID()
	err = h.Do(func() error {
		r, err := newAddrReader(host)
		if err == nil {
			r.close()
			return errors.New("a reader made inside another namespace was accepted")
		}
		t.Logf("as expected: %v", err)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Discovery reads every namespace live on every miss; nothing about a namespace's addresses is
// remembered from one Find to the next. These cases are those an index of remembered addresses
// would get wrong, each run with the reader and with reads inside the namespaces. The namespaces
// are proven by CNI records (the pods have no process).
func TestFindSeesAddressChanges(t *testing.T) {
	testutil.RequireRoot(t)
	for _, mode := range []string{"reader", "inside"} {
		finder := func(t *testing.T, dir, records string, cache bool) *Finder {
			f := newFinder(t, Options{Strategies: []Strategy{StrategyNamed, StrategyCNICache}, NetnsDirs: []string{dir},
				CNIResultsDir: records, Cache: cache})
			if mode == "inside" {
				err := errors.New("test: read inside")
				f.noReader.Store(&err)
			}
			t.Cleanup(func() {
				if used := f.noReader.Load() == nil; used != (mode == "reader") {
					t.Errorf("mode %s: reader in use = %v (%v)", mode, used, f.noReader.Load())
				}
			})
			return f
		}
		t.Run(mode, func(t *testing.T) {
			t.Run("namespace gains the IP after a first look", func(t *testing.T) {
				dir, records := t.TempDir(), t.TempDir()
				a := pinnedNamespace(t, dir, "a")
				b := pinnedNamespace(t, dir, "b")
				uidA, uidB := newUID(), newUID()
				recordFor(t, records, uidA, a)
				recordFor(t, records, uidB, b)
				q := newIPv4()
				ipIn(t, b, "addr", "add", prefix(q), "dev", "lo")
				f := finder(t, dir, records, false)
				p := newIPv4()
				findErr(t, f, uidA, []netip.Addr{p}, ErrNotFound) // a has no address yet, b only q
				findErr(t, f, uidB, []netip.Addr{p}, ErrNotFound)

				ipIn(t, a, "addr", "add", prefix(p), "dev", "lo")
				mustFind(t, f, uidA, []netip.Addr{p}, pathKey(t, a))

				// b, seen twice holding only q, gains p too: a second holder, not hidden.
				ipIn(t, b, "addr", "add", prefix(p), "dev", "lo")
				mustFind(t, f, uidB, []netip.Addr{p}, pathKey(t, b))
				mustFind(t, f, uidA, []netip.Addr{p}, pathKey(t, a))
				err := findErr(t, f, newUID(), []netip.Addr{p}, ErrNotProven)
				if !strings.Contains(err.Error(), dir+"/a") || !strings.Contains(err.Error(), dir+"/b") {
					t.Errorf("the error does not name both namespaces: %v", err)
				}
			})
			t.Run("name deleted and re-created", func(t *testing.T) {
				dir, records := t.TempDir(), t.TempDir()
				p := newIPv4()
				uid := newUID()
				path := filepath.Join(dir, "cni-x")
				recordFor(t, records, uid, path)
				old := newProc(t, false) // keeps the old namespace alive, holding p, after its name is gone
				pinAt(t, old.Path, path)
				ipIn(t, path, "addr", "add", prefix(p), "dev", "lo")
				f := finder(t, dir, records, true)
				oldKey := pathKey(t, path)
				mustFind(t, f, uid, []netip.Addr{p}, oldKey)

				unpin(t, path)
				findErr(t, f, uid, []netip.Addr{p}, ErrNotFound) // only the name is looked at
				cur := newProc(t, false)
				pinAt(t, cur.Path, path)
				ipIn(t, path, "addr", "add", prefix(p), "dev", "lo")
				curKey := pathKey(t, path)
				if curKey == oldKey {
					t.Fatal("the new namespace has the old one's inode although that one is alive")
				}
				mustFind(t, f, uid, []netip.Addr{p}, curKey) // the cached old namespace is not served
				findErr(t, f, newUID(), []netip.Addr{p}, ErrNotProven)
			})
			t.Run("IP moves to another namespace", func(t *testing.T) {
				dir, records := t.TempDir(), t.TempDir()
				a := pinnedNamespace(t, dir, "a")
				b := pinnedNamespace(t, dir, "b")
				uid, uidB := newUID(), newUID()
				recordFor(t, records, uid, a)
				recordFor(t, records, uidB, b)
				p, q := newIPv4(), newIPv4()
				ipIn(t, a, "addr", "add", prefix(p), "dev", "lo")
				ipIn(t, b, "addr", "add", prefix(q), "dev", "lo")
				f := finder(t, dir, records, true)
				mustFind(t, f, uid, []netip.Addr{p}, pathKey(t, a))

				ipIn(t, a, "addr", "del", prefix(p), "dev", "lo")
				ipIn(t, b, "addr", "add", prefix(p), "dev", "lo")
				mustFind(t, f, uidB, []netip.Addr{p}, pathKey(t, b))
				findErr(t, f, uid, []netip.Addr{p}, ErrNotProven) // the cached a no longer holds it; b is not uid's
				// And back into a as well: both hold it, each proven for its own pod.
				ipIn(t, a, "addr", "add", prefix(p), "dev", "lo")
				mustFind(t, f, uid, []netip.Addr{p}, pathKey(t, a))
				mustFind(t, f, uidB, []netip.Addr{p}, pathKey(t, b))
				// A second record of uid naming b (a sandbox being re-created): both proven, not guessed.
				recordFor(t, records, uid, b)
				f.Forget(uid)
				f.Forget(uidB) // else b's cached proof says it is uidB's, which decides
				findErr(t, f, uid, []netip.Addr{p}, ErrAmbiguous)
			})
		})
	}
}

// pinnedNamespace makes a namespace without process, pinned only at dir/name; removed at cleanup.
func pinnedNamespace(t *testing.T, dir, name string) string {
	t.Helper()
	s := newProc(t, false)
	path := filepath.Join(dir, name)
	pinAt(t, s.Path, path)
	s.stop()
	return path
}

// pinAt bind-mounts the namespace at nsPath onto path, as containerd does.
func pinAt(t *testing.T, nsPath, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(nsPath, path, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount %s on %s: %v", nsPath, path, err)
	}
	t.Cleanup(func() { unix.Unmount(path, unix.MNT_DETACH) })
}

// unpin removes the name path, as containerd does when it removes a sandbox.
func unpin(t *testing.T, path string) {
	t.Helper()
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func pathKey(t *testing.T, path string) Key {
	t.Helper()
	k, err := statKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestFindInsideFallback runs the basic strategies with the addresses read inside the namespaces,
// as on a kernel without IFA_TARGET_NETNSID.
func TestFindInsideFallback(t *testing.T) {
	testutil.RequireRoot(t)
	uid, s, ip := newPod(t)
	dir := t.TempDir()
	s.pinNamed(t, dir)
	for _, st := range []Strategy{StrategyNamed, StrategyProcUID, StrategyProcIP} {
		sts := []Strategy{st}
		if !st.Evidence() {
			sts = append(sts, StrategyProcUID) // the proof
		}
		f := newFinder(t, Options{Strategies: sts, NetnsDirs: []string{dir}, Cache: true})
		err := errors.New("test: read inside")
		f.noReader.Store(&err)
		mustFind(t, f, uid, []netip.Addr{ip}, s.key(t))
		mustFind(t, f, uid, []netip.Addr{ip}, s.key(t)) // cache hit
		if f.reader() != nil {
			t.Fatal("a reader was handed out although disabled")
		}
	}
	// The reader is used when available, and kept for the next Find.
	f := newFinder(t, Options{Strategies: []Strategy{StrategyNamed, StrategyProcUID}, NetnsDirs: []string{dir}})
	mustFind(t, f, uid, []netip.Addr{ip}, s.key(t))
	if f.noReader.Load() != nil || len(f.readers) != 1 {
		t.Fatalf("reader disabled (%v) or not kept (%d idle)", f.noReader.Load(), len(f.readers))
	}
}

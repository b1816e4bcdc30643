package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// newFinder returns a Finder closed at cleanup.
func newFinder(t testing.TB, opts Options) *Finder {
	t.Helper()
	f, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// mustFind expects Find to return the namespace want.
func mustFind(t testing.TB, f *Finder, uid string, ips []netip.Addr, want Key) *Handle {
	t.Helper()
	h, err := f.Find(context.Background(), uid, ips)
	if err != nil {
		t.Fatalf("Find(%q, %v): %v", uid, ips, err)
	}
	t.Cleanup(func() { h.Close() })
	if h.Key() != want {
		t.Fatalf("Find(%q, %v) = %s (inode %d), want inode %d", uid, ips, h.Path(), h.Inode(), want.Ino)
	}
	if f.IsHost(h) {
		t.Fatalf("Find returned the host namespace %s", h.Path())
	}
	return h
}

// findErr expects Find to fail with target, and returns the error.
func findErr(t testing.TB, f *Finder, uid string, ips []netip.Addr, target error) error {
	t.Helper()
	h, err := f.Find(context.Background(), uid, ips)
	if err == nil {
		h.Close()
		t.Fatalf("Find(%q, %v) = %s (inode %d), want error %v", uid, ips, h.Path(), h.Inode(), target)
	}
	if !errors.Is(err, target) {
		t.Fatalf("Find(%q, %v) error = %v, want %v", uid, ips, err, target)
	}
	t.Logf("as expected: %v", err)
	return err
}

func only(s ...Strategy) Options { return Options{Strategies: s} }

func TestOpenHandle(t *testing.T) {
	testutil.RequireRoot(t)
	s := newNamed(t)
	ip := newIPv4()
	s.addVeth(t, ip)
	before := OpenFDs()

	h, err := Open(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	if OpenFDs() != before+1 {
		t.Errorf("OpenFDs = %d after Open, want %d", OpenFDs(), before+1)
	}
	if h.Path() != s.Path || h.Key() != s.key(t) || h.Inode() != s.key(t).Ino {
		t.Errorf("handle %s inode %d, want %s inode %d", h.Path(), h.Inode(), s.Path, s.key(t).Ino)
	}
	// Do runs on a thread inside the namespace.
	var inside uint64
	if err := h.Do(func() error {
		var st unix.Stat_t
		err := unix.Stat("/proc/thread-self/ns/net", &st)
		inside = st.Ino
		return err
	}); err != nil || inside != h.Inode() {
		t.Errorf("Do: thread namespace inode %d (%v), want %d", inside, err, h.Inode())
	}
	wantErr := errors.New("from fn")
	if err := h.Do(func() error { return wantErr }); err != wantErr {
		t.Errorf("Do returned %v, want fn's error", err)
	}
	addrs, err := h.Addrs()
	if err != nil || !containsAddr(addrs, ip) {
		t.Errorf("Addrs = %v, %v; want %s among them", addrs, err, ip)
	}
	id, err := h.ID()
	if err != nil || id.Kind != contract.KindCookie || id.Value == 0 {
		t.Errorf("ID = %v, %v; want a cookie", id, err)
	}
	self, err := contract.CurrentNetnsID()
	if err != nil || self == id {
		t.Errorf("ID %v equals the test's own namespace %v (%v)", id, self, err)
	}
	// A second handle on the same namespace has the same identity.
	h2, err := Open(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	if id2, err := h2.ID(); err != nil || id2 != id || !h2.Same(h) {
		t.Errorf("second handle ID %v (%v), want %v", id2, err, id)
	}
	h2.Close()

	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if OpenFDs() != before {
		t.Errorf("OpenFDs = %d after Close, want %d", OpenFDs(), before)
	}
	if err := h.Do(func() error { return nil }); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Do after Close: %v", err)
	}

	// Not a namespace, and absent.
	file := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(file, nil, 0o644)
	if _, err := Open(file); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("Open(plain file) = %v, want an error naming it", err)
	}
	if _, err := Open("/run/netns/absent-" + randHex(8)); err == nil || !strings.Contains(err.Error(), "absent-") {
		t.Errorf("Open(absent) = %v, want an error naming it", err)
	}
	// A namespace of another type.
	if _, err := Open("/proc/self/ns/uts"); err == nil || !strings.Contains(err.Error(), "another type") {
		t.Errorf("Open(uts namespace) = %v, want a type error", err)
	}
}

func TestHostID(t *testing.T) {
	testutil.RequireRoot(t)
	f := newFinder(t, Options{})
	self, err := contract.CurrentNetnsID()
	if err != nil {
		t.Fatal(err)
	}
	if f.HostID() != self {
		t.Errorf("HostID = %v, want the test's own %v", f.HostID(), self)
	}
	for _, p := range []string{"/proc/self/ns/net", "/proc/1/ns/net"} {
		h, err := Open(p)
		if err != nil && p == "/proc/1/ns/net" {
			t.Logf("PID 1's namespace is not readable here (%v): the Finder relies on its own", err)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if !f.IsHost(h) {
			t.Errorf("IsHost(%s) = false", p)
		}
		h.Close()
	}
	s := newProc(t, false)
	h, err := Open(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if f.IsHost(h) {
		t.Errorf("IsHost(a new namespace) = true")
	}
}

// TestFindNamed finds named namespaces in the default directories, proven by a CNI record naming
// the host path /var/run/netns/<name> (as containerd and CRI-O write it) or by a process of the pod
// in it; the same namespace for a UID nothing names is not proven.
func TestFindNamed(t *testing.T) {
	testutil.RequireRoot(t)
	s := newNamed(t)
	ip := newIPv4()
	s.addVeth(t, ip)
	decoy := newNamed(t) // another namespace, without the IP
	decoy.addVeth(t, newIPv4())
	records := t.TempDir()
	uid := newUID()
	rec := recordFor(t, records, uid, "/var/run/netns/"+s.Name)

	// Default dirs: /var/run/netns and /run/netns.
	f := newFinder(t, Options{Strategies: []Strategy{StrategyNamed, StrategyCNICache, StrategyProcUID}, CNIResultsDir: records})
	h := mustFind(t, f, uid, []netip.Addr{ip}, s.key(t))
	if h.Source() != StrategyNamed || !strings.HasSuffix(h.Path(), "/"+s.Name) {
		t.Errorf("found %s by %q, want %s by named", h.Path(), h.Source(), s.Name)
	}
	if p := h.Proof(); !slices.Equal(p.Evidence, []Strategy{StrategyCNICache}) || p.Record != rec || len(p.SandboxID) != 64 {
		t.Errorf("Proof = %+v, want the record %s", p, rec)
	}
	id, err := h.ID()
	if err != nil || id.Kind != contract.KindCookie || id == f.HostID() {
		t.Errorf("ID = %v, %v", id, err)
	}

	// A UID no record and no process names: the IP alone proves nothing.
	err = findErr(t, f, newUID(), []netip.Addr{ip}, ErrNotProven)
	var ne *NotProvenError
	if !errors.As(err, &ne) || len(ne.Candidates) != 1 || !strings.HasSuffix(ne.Candidates[0].Path, "/"+s.Name) ||
		!strings.Contains(err.Error(), "cni-cache: no record of the pod") || !strings.Contains(err.Error(), "proc-uid: no process runs in it") {
		t.Errorf("want a *NotProvenError naming %s and why: %v", s.Name, err)
	}

	// A named namespace held by a process of the pod (containerd's pause): proven by /proc.
	uid2 := newUID()
	p := newProc(t, false, podCgroup(t, uid2))
	ip2 := newIPv4()
	p.addVeth(t, ip2)
	p.pinNamed(t, "/run/netns")
	h2 := mustFind(t, f, uid2, []netip.Addr{ip2}, p.key(t))
	if pr := h2.Proof(); !slices.Equal(pr.Evidence, []Strategy{StrategyProcUID}) || !slices.Equal(pr.PIDs, []int{p.PID}) {
		t.Errorf("Proof = %+v, want proc-uid by pid %d", pr, p.PID)
	}
	findErr(t, f, newUID(), []netip.Addr{ip2}, ErrNotProven)
}

func TestFindByCgroupUID(t *testing.T) {
	testutil.RequireRoot(t)
	for _, hier := range cgroupHierarchies(t) {
		for _, l := range layouts {
			t.Run(hier.Name+"/"+l.Name, func(t *testing.T) {
				uid := newUID()
				s := newProc(t, false, filepath.Join(hier.Root, l.Path(uid)))
				ip := newIPv4()
				s.addVeth(t, ip)
				other := newProc(t, false, filepath.Join(hier.Root, l.Path(newUID())))
				other.addVeth(t, newIPv4())

				f := newFinder(t, only(StrategyProcUID))
				h := mustFind(t, f, uid, []netip.Addr{ip}, s.key(t))
				if h.Source() != StrategyProcUID {
					t.Errorf("Source = %q", h.Source())
				}
				// The systemd spelling of the UID is accepted too (upper case as well).
				mustFind(t, f, strings.ToUpper(uid), []netip.Addr{ip}, s.key(t))
			})
		}
	}
}

func TestFindByIP(t *testing.T) {
	testutil.RequireRoot(t)
	uid := newUID()
	s := newProc(t, false, podCgroup(t, uid))
	v4, v6 := newIPv4(), newIPv6()
	s.addVeth(t, v4, v6)
	decoy := newProc(t, false)
	decoy.addVeth(t, newIPv4())

	f := newFinder(t, only(StrategyProcIP, StrategyProcUID)) // proc-uid proves what proc-ip finds
	h := mustFind(t, f, uid, []netip.Addr{v4}, s.key(t))
	if h.Source() != StrategyProcIP || !slices.Equal(h.Proof().Evidence, []Strategy{StrategyProcUID}) {
		t.Errorf("Source = %q, Proof = %v", h.Source(), h.Proof())
	}
	// Dual-stack pod: one of its IPs is enough.
	mustFind(t, f, uid, []netip.Addr{newIPv4(), v6}, s.key(t))
	// Another UID: found by IP, not proven.
	findErr(t, f, newUID(), []netip.Addr{v4}, ErrNotProven)
}

func TestFindDefaultOrder(t *testing.T) {
	testutil.RequireRoot(t)
	uid, s, ip := newPod(t)
	dir := t.TempDir()

	// Not named: proc-uid finds it.
	f := newFinder(t, Options{NetnsDirs: []string{dir}, CNIResultsDir: t.TempDir()})
	if h := mustFind(t, f, uid, []netip.Addr{ip}, s.key(t)); h.Source() != StrategyProcUID {
		t.Errorf("Source = %q, want proc-uid", h.Source())
	}
	// Named: found first by name.
	s.pinNamed(t, dir)
	if h := mustFind(t, f, uid, []netip.Addr{ip}, s.key(t)); h.Source() != StrategyNamed {
		t.Errorf("Source = %q, want named", h.Source())
	}
	// A UID nobody runs: proc-ip finds it, nothing proves it.
	f2 := newFinder(t, only(StrategyProcUID, StrategyProcIP))
	err := findErr(t, f2, newUID(), []netip.Addr{ip}, ErrNotProven)
	if !strings.Contains(err.Error(), s.Path) || !strings.Contains(err.Error(), "in cgroups of other pods ["+uid+"] only") {
		t.Errorf("the error does not say whose processes run in %s: %v", s.Path, err)
	}
}

func TestTwoCandidatesNotGuessed(t *testing.T) {
	testutil.RequireRoot(t)
	uid := newUID()
	ip := newIPv4()

	t.Run("named, no processes, no records", func(t *testing.T) {
		a, b := newNamed(t), newNamed(t)
		a.addVeth(t, ip)
		b.addVeth(t, ip)
		f := newFinder(t, Options{Strategies: []Strategy{StrategyNamed, StrategyCNICache}, CNIResultsDir: t.TempDir()})
		err := findErr(t, f, uid, []netip.Addr{ip}, ErrNotProven)
		var ne *NotProvenError
		if !errors.As(err, &ne) || len(ne.Candidates) != 2 {
			t.Fatalf("error %v: want a *NotProvenError with 2 candidates", err)
		}
		paths := ne.Candidates[0].Path + " " + ne.Candidates[1].Path
		if !strings.Contains(paths, a.Name) || !strings.Contains(paths, b.Name) || !strings.Contains(err.Error(), "no record of the pod") {
			t.Errorf("candidates %s, error %v", paths, err)
		}
	})

	// A leaked namespace of another pod holding the same IP, and the pod's own.
	dir := t.TempDir()
	leaked := newProc(t, false, podCgroup(t, newUID()))
	leaked.addVeth(t, ip)
	leaked.pinNamed(t, dir)
	own := newProc(t, false, podCgroup(t, uid))
	own.addVeth(t, ip)
	own.pinNamed(t, dir)
	for _, s := range []Strategy{StrategyNamed, StrategyProcIP} {
		t.Run(string(s)+", resolved by the proof", func(t *testing.T) {
			f := newFinder(t, Options{Strategies: []Strategy{s, StrategyProcUID}, NetnsDirs: []string{dir}})
			mustFind(t, f, uid, []netip.Addr{ip}, own.key(t))
			// Without a process of the pod, nothing proves either.
			err := findErr(t, f, newUID(), []netip.Addr{ip}, ErrNotProven)
			want := []string{leaked.Path, own.Path}
			if s == StrategyNamed {
				want = []string{dir + "/cni-", "pids [" + strconv.Itoa(leaked.PID) + "]"}
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}

	t.Run("both run processes of the pod", func(t *testing.T) {
		again := newProc(t, false, podCgroup(t, uid)) // a sandbox being re-created
		again.addVeth(t, ip)
		f := newFinder(t, only(StrategyProcUID))
		err := findErr(t, f, uid, []netip.Addr{ip}, ErrAmbiguous)
		var ae *AmbiguousError
		if !errors.As(err, &ae) || len(ae.Candidates) != 2 || !ae.Candidates[0].UIDMatch || !ae.Candidates[1].UIDMatch {
			t.Fatalf("error %v: want 2 candidates proven", err)
		}
	})
}

// TestCgroupNamespaceView checks the parser on what the kernel really shows a reader inside a
// cgroup namespace (a controller in a container with its own cgroup namespace): paths relative to
// the reader's cgroup, such as "0::/../../../burstable/pod<uid>/<ctr>".
func TestCgroupNamespaceView(t *testing.T) {
	testutil.RequireRoot(t)
	var v2 string
	for _, h := range cgroupHierarchies(t) {
		if h.Name == "v2" {
			v2 = h.Root
		}
	}
	if v2 == "" {
		t.Skip("no cgroup v2 hierarchy mounted: a reader cannot be born in a cgroup (CLONE_INTO_CGROUP)")
	}
	for _, l := range layouts {
		t.Run(l.Name, func(t *testing.T) {
			uid, readerUID := newUID(), newUID()
			target := newProc(t, false, filepath.Join(v2, l.Path(uid)))
			readerDir := filepath.Join(v2, l.Path(readerUID))
			mkCgroup(t, readerDir)
			dirFD, err := os.Open(readerDir)
			if err != nil {
				t.Fatal(err)
			}
			defer dirFD.Close()
			// The reader is born in its pod's cgroup, then unshares a cgroup namespace rooted there.
			cmd := exec.Command("unshare", "--cgroup", "cat", fmt.Sprintf("/proc/%d/cgroup", target.PID))
			cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dirFD.Fd())}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("read /proc/%d/cgroup from a cgroup namespace: %v", target.PID, err)
			}
			view := string(out)
			t.Logf("seen from the reader's cgroup namespace:\n%s", view)
			if !strings.Contains(view, "0::/..") {
				t.Fatalf("the v2 line is not relative to the reader's cgroup namespace: %q", view)
			}
			if !cgroupHasPod(view, uid) {
				t.Errorf("cgroupHasPod(%q, %q) = false", view, uid)
			}
			if cgroupHasPod(view, readerUID) {
				t.Errorf("cgroupHasPod(%q, the reader's UID %q) = true", view, readerUID)
			}
		})
	}
}

package netns

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
)

// all enables every strategy, with the CNI records in records and the named namespaces in dir.
func all(dir, records string) Options {
	return Options{NetnsDirs: []string{dir}, CNIResultsDir: records}
}

// TestFindRefusesAnotherPodsNamespace is the tenant's attack: pod B's status carries the IP of pod
// A's namespace (a forged podIPs, or an IP the CNI reused before B's status caught up). Whatever
// finds A's namespace, nothing proves it B's.
func TestFindRefusesAnotherPodsNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	uidA, uidB := newUID(), newUID()
	dir, records := t.TempDir(), t.TempDir()
	victim := newProc(t, false, podCgroup(t, uidA))
	ip := newIPv4()
	victim.addVeth(t, ip)
	named := victim.pinNamed(t, dir)
	recordFor(t, records, uidA, named)
	own := newProc(t, false, podCgroup(t, uidB)) // B's real namespace, with another IP
	own.addVeth(t, newIPv4())

	for _, opts := range []Options{all(dir, records), only(StrategyProcIP, StrategyProcUID),
		{Strategies: []Strategy{StrategyNamed, StrategyCNICache}, NetnsDirs: []string{dir}, CNIResultsDir: records}} {
		f := newFinder(t, opts)
		err := findErr(t, f, uidB, []netip.Addr{ip}, ErrNotProven)
		if opts.has(StrategyProcUID) && !strings.Contains(err.Error(), "in cgroups of other pods ["+uidA+"] only") {
			t.Errorf("%v: the error does not say the namespace runs pod A's processes: %v", opts.Strategies, err)
		}
		mustFind(t, f, uidA, []netip.Addr{ip}, victim.key(t))
	}
}

// TestSharedNamespaceRefused: a namespace running processes of two pods (a privileged pod entered
// it) is refused for either; host processes that entered it (nsenter, the controller and what it
// runs) are not pods.
func TestSharedNamespaceRefused(t *testing.T) {
	testutil.RequireRoot(t)
	uidA, uidB := newUID(), newUID()
	s := newProc(t, false, podCgroup(t, uidA))
	ip := newIPv4()
	s.addVeth(t, ip)
	f := newFinder(t, only(StrategyProcUID))

	hostPID := s.enter(t, "") // a host process: neither proves nor refuses
	h := mustFind(t, f, uidA, []netip.Addr{ip}, s.key(t))
	if p := h.Proof(); p.HostProcs != 1 || !slices.Equal(p.PIDs, []int{s.PID}) {
		t.Errorf("Proof = %+v, want pid %d and 1 host process (%d)", p, s.PID, hostPID)
	}

	// The controller runs in a pod of its DaemonSet: what it runs inside the namespace (an
	// iptables-restore) is in its own pod's cgroup, and is a host process too.
	uidC := newUID()
	f.selfPods = []string{uidC}
	s.enter(t, podCgroup(t, uidC))
	if p := mustFind(t, f, uidA, []netip.Addr{ip}, s.key(t)).Proof(); p.HostProcs != 2 {
		t.Errorf("Proof = %+v, want 2 host processes (one in the controller's cgroup)", p)
	}

	intruder := s.enter(t, podCgroup(t, uidB))
	err := findErr(t, f, uidA, []netip.Addr{ip}, ErrShared)
	var se *SharedError
	if !errors.As(err, &se) || se.PodUID != uidA || !slices.Equal(se.Others[uidB], []int{intruder}) ||
		!strings.Contains(err.Error(), uidA) || !strings.Contains(err.Error(), uidB) {
		t.Errorf("want a *SharedError naming %s and %s (pid %d): %v", uidA, uidB, intruder, err)
	}
	findErr(t, f, uidB, []netip.Addr{ip}, ErrShared) // and for the intruder's pod too
}

// TestCNIRecordProof: a record proves a namespace only when it is the pod's and its netns path
// opens to the very namespace; records that do not parse, or are too large, are ignored and said.
func TestCNIRecordProof(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	uid := newUID()
	s := newProc(t, false)
	ip := newIPv4()
	s.addVeth(t, ip)
	path := s.pinNamed(t, dir)
	other := newProc(t, false) // another namespace, pinned too
	otherPath := other.pinNamed(t, dir)

	cases := []struct {
		name    string
		write   func(t *testing.T, records string)
		wantErr error
		want    string // in the error
	}{
		{"the pod's record", func(t *testing.T, r string) { recordFor(t, r, uid, path) }, nil, ""},
		{"another pod's record", func(t *testing.T, r string) { recordFor(t, r, newUID(), path) },
			ErrNotProven, "1 files in"},
		{"netns path of another namespace", func(t *testing.T, r string) { recordFor(t, r, uid, otherPath) },
			ErrNotProven, "names netns " + otherPath + ", another namespace"},
		{"netns path outside the netns directories", func(t *testing.T, r string) { recordFor(t, r, uid, "/elsewhere/x") },
			ErrNotProven, "outside the netns directories"},
		{"malformed", func(t *testing.T, r string) {
			data, _ := json.Marshal(cniRecordFixture(uid, randHex(64), path))
			writeRecordFile(t, r, "bridge-x-eth0", data[:len(data)-1])
		}, ErrNotProven, "1 ignored as malformed"},
		{"two UIDs", func(t *testing.T, r string) {
			rec := cniRecordFixture(uid, randHex(64), path)
			rec["cniArgs"] = append(rec["cniArgs"].([][2]string), [2]string{"K8S_POD_UID", uid})
			writeRecord(t, r, rec)
		}, ErrNotProven, "K8S_POD_UID given twice"},
		{"oversized", func(t *testing.T, r string) {
			rec := cniRecordFixture(uid, randHex(64), path)
			rec["config"] = bytes.Repeat([]byte{'x'}, MaxCNIRecordBytes)
			writeRecord(t, r, rec)
		}, ErrNotProven, "1 ignored as larger than the limit"},
		{"writable by others", func(t *testing.T, r string) {
			p := recordFor(t, r, uid, path)
			if err := os.Chmod(p, 0o666); err != nil {
				t.Fatal(err)
			}
		}, ErrNotProven, "1 ignored as not owned by root or writable by others"},
		{"a symlink to the pod's record", func(t *testing.T, r string) {
			p := recordFor(t, t.TempDir(), uid, path)
			if err := os.Symlink(p, r+"/bridge-y-eth0"); err != nil {
				t.Fatal(err)
			}
		}, ErrNotProven, "1 ignored as not a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			records := t.TempDir()
			c.write(t, records)
			f := newFinder(t, Options{Strategies: []Strategy{StrategyNamed, StrategyCNICache}, NetnsDirs: []string{dir}, CNIResultsDir: records})
			if c.wantErr == nil {
				h := mustFind(t, f, uid, []netip.Addr{ip}, s.key(t))
				if p := h.Proof(); !slices.Equal(p.Evidence, []Strategy{StrategyCNICache}) || !strings.HasPrefix(p.Record, records+"/bridge-") {
					t.Errorf("Proof = %+v", p)
				}
				return
			}
			err := findErr(t, f, uid, []netip.Addr{ip}, c.wantErr)
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error lacks %q: %v", c.want, err)
			}
		})
	}

	// cni-cache as a finder: a namespace no directory names, whose record names /proc/<pid>/ns/net
	// (a runtime that does not pin namespaces).
	records := t.TempDir()
	unnamed := newProc(t, false)
	ip2 := newIPv4()
	unnamed.addVeth(t, ip2)
	recordFor(t, records, uid, "/proc/"+strconv.Itoa(unnamed.PID)+"/ns/net")
	f := newFinder(t, Options{Strategies: []Strategy{StrategyNamed, StrategyCNICache}, NetnsDirs: []string{dir}, CNIResultsDir: records})
	if h := mustFind(t, f, uid, []netip.Addr{ip2}, unnamed.key(t)); h.Source() != StrategyCNICache {
		t.Errorf("Source = %q, want cni-cache", h.Source())
	}
}

// TestCRIOWithoutInfraContainer: CRI-O with drop_infra_ctr=true pins the namespace under
// /var/run/netns and runs no process in it until the first container. Its CNI record proves it;
// without one the pod waits until the wait container runs in it, which proves it through /proc.
func TestCRIOWithoutInfraContainer(t *testing.T) {
	testutil.RequireRoot(t)
	dir, records := t.TempDir(), t.TempDir()
	uid := newUID()
	path := pinnedNamespace(t, dir, newUID()) // CRI-O names it by a UUID; no process
	ip := newIPv4()
	ipIn(t, path, "addr", "add", prefix(ip), "dev", "lo")
	ipIn(t, path, "link", "set", "lo", "up")
	opts := all(dir, records)

	// No record, no process: not proven, and the error says why.
	f := newFinder(t, opts)
	err := findErr(t, f, uid, []netip.Addr{ip}, ErrNotProven)
	for _, w := range []string{"cni-cache: no record of the pod", "no process runs in it", "CRI-O"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q: %v", w, err)
		}
	}

	// CRI-O's record (ocicni's arguments, the infra container ID being the sandbox ID).
	sandboxID := randHex(64)
	rec := cniRecordFixture(uid, sandboxID, path, ip)
	rec["networkName"], rec["ifName"] = "crio", "eth0"
	rec["cniArgs"] = [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "app"}, {"K8S_POD_NAME", "web"},
		{"K8S_POD_INFRA_CONTAINER_ID", sandboxID}, {"K8S_POD_UID", uid}}
	recPath := writeRecord(t, records, rec)
	h := mustFind(t, f, uid, []netip.Addr{ip}, pathKey(t, path))
	if p := h.Proof(); p.SandboxID != sandboxID || p.Record != recPath || len(p.PIDs) != 0 {
		t.Errorf("Proof = %+v, want sandbox %s from %s", p, sandboxID, recPath)
	}
	h.Close()

	// Without the record, the wait container running in the pod's cgroup proves it.
	if err := os.Remove(recPath); err != nil {
		t.Fatal(err)
	}
	f2 := newFinder(t, opts)
	findErr(t, f2, uid, []netip.Addr{ip}, ErrNotProven)
	sb := &sandbox{Path: path}
	wait := sb.enter(t, podCgroup(t, uid))
	h2 := mustFind(t, f2, uid, []netip.Addr{ip}, pathKey(t, path))
	if p := h2.Proof(); !slices.Equal(p.Evidence, []Strategy{StrategyProcUID}) || !slices.Equal(p.PIDs, []int{wait}) {
		t.Errorf("Proof = %+v, want proc-uid by the wait process %d", p, wait)
	}
}

// TestProofCache: the proof of a namespace is kept by its cookie: finding it again (the handle
// cache missed) does not walk /proc, another pod is refused it, and Forget drops it.
func TestProofCache(t *testing.T) {
	testutil.RequireRoot(t)
	uid := newUID()
	dir := t.TempDir()
	s := newProc(t, false, podCgroup(t, uid))
	ip, ip2 := newIPv4(), newIPv4()
	s.addVeth(t, ip, ip2)
	s.pinNamed(t, dir)
	f := newFinder(t, Options{Strategies: []Strategy{StrategyNamed, StrategyProcUID}, NetnsDirs: []string{dir}, Cache: true})
	scans := func(want int64) {
		t.Helper()
		if got := f.procScans.Load(); got != want {
			t.Errorf("/proc walks = %d, want %d", got, want)
		}
	}

	h := mustFind(t, f, uid, []netip.Addr{ip}, s.key(t))
	scans(1)
	if h.Proof().Cached || f.Proofs() != 1 {
		t.Errorf("first proof %+v, %d cached", h.Proof(), f.Proofs())
	}
	// Other IPs: the handle cache drops the entry, named finds the namespace, the proof is cached.
	h = mustFind(t, f, uid, []netip.Addr{ip, ip2}, s.key(t))
	scans(1)
	if p := h.Proof(); !p.Cached || !slices.Equal(p.PIDs, []int{s.PID}) || f.proofHits.Load() != 1 {
		t.Errorf("second proof %+v, proof hits %d: want the cached one", p, f.proofHits.Load())
	}
	// Another pod claiming the IP is refused the namespace from the cache (then proc-uid walks
	// /proc for that pod's own processes, in vain).
	err := findErr(t, f, newUID(), []netip.Addr{ip}, ErrNotProven)
	scans(2)
	if !strings.Contains(err.Error(), "proven earlier to be pod UID \""+uid+"\"'s") {
		t.Errorf("error does not name the namespace's pod: %v", err)
	}
	// Forget drops it: the next Find walks /proc again.
	f.Forget(uid)
	if f.Proofs() != 0 || f.Cached() != 0 {
		t.Errorf("after Forget: %d proofs, %d handles cached", f.Proofs(), f.Cached())
	}
	if h := mustFind(t, f, uid, []netip.Addr{ip}, s.key(t)); h.Proof().Cached {
		t.Errorf("proof after Forget is the cached one: %+v", h.Proof())
	}
	scans(3)
}

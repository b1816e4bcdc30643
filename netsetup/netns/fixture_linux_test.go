package netns

// Fixtures for the root tests: real network namespaces (named, and held by long-lived processes
// placed in cgroups whose paths carry a pod UID), real veth pairs giving them addresses.

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// randHex returns n random hex digits.
func randHex(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// newUID returns a random pod UID (UUID layout).
func newUID() string {
	h := randHex(32)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Addresses come from the benchmarking ranges (198.18.0.0/15, a random fd00::/8 /64), from a random
// starting point so parallel test binaries do not collide.
var (
	v4Next  atomic.Uint32
	v6Base  netip.Addr
	v6Next  atomic.Uint32
	addrsMu sync.Once
)

func initAddrs() {
	addrsMu.Do(func() {
		var b [4]byte
		rand.Read(b[:])
		v4Next.Store(0xC6120000 | (binary.BigEndian.Uint32(b[:]) & 0x1F000)) // 198.18.0.0 + 4096*k
		var p [16]byte
		rand.Read(p[:])
		p[0] = 0xfd
		clear(p[8:])
		v6Base = netip.AddrFrom16(p)
	})
}

func newIPv4() netip.Addr {
	initAddrs()
	n := v4Next.Add(1)
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func newIPv6() netip.Addr {
	initAddrs()
	b := v6Base.As16()
	binary.BigEndian.PutUint32(b[12:], v6Next.Add(1))
	return netip.AddrFrom16(b)
}

// run runs a command (never through a shell) and fails the test with its output on error.
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// sandbox is a network namespace standing for a pod's.
type sandbox struct {
	Path string // a path pinning the namespace (/run/netns/<name> or /proc/<pid>/ns/net)
	PID  int    // the process holding it (0 for a named namespace without process)
	Name string // the name for a named namespace ("" otherwise)
	host bool   // the process runs in the host namespace
	cmd  *exec.Cmd
}

// stop kills the sandbox's process and reaps it: its namespace goes away unless pinned.
func (s *sandbox) stop() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// newNamed creates a named namespace with `ip netns add` (in /run/netns), without process.
func newNamed(t testing.TB) *sandbox {
	t.Helper()
	name := "ntest-" + randHex(8)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return &sandbox{Path: "/run/netns/" + name, Name: name}
}

// newProc starts a long-lived process in a new network namespace (or in the host's when hostNet)
// and moves it into each cgroup directory given (created, then removed after the process).
func newProc(t testing.TB, hostNet bool, cgroupDirs ...string) *sandbox {
	t.Helper()
	for _, d := range cgroupDirs {
		mkCgroup(t, d)
	}
	cmd := exec.Command("sleep", "600")
	if !hostNet {
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleep in a new network namespace: %v", err)
	}
	s := &sandbox{PID: cmd.Process.Pid, host: hostNet, cmd: cmd}
	s.Path = fmt.Sprintf("/proc/%d/ns/net", s.PID)
	t.Cleanup(s.stop)
	pid := s.PID
	for _, d := range cgroupDirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			t.Fatalf("move pid %d into cgroup %s: %v", pid, d, err)
		}
	}
	return s
}

// newPod starts a pod's sandbox: a process in a cgroup of a new pod UID, in a new namespace holding
// a new IPv4 address on a veth.
func newPod(t testing.TB) (uid string, s *sandbox, ip netip.Addr) {
	t.Helper()
	uid, ip = newUID(), newIPv4()
	s = newProc(t, false, podCgroup(t, uid))
	s.addVeth(t, ip)
	return uid, s, ip
}

// key is the namespace's identity as the Finder sees it.
func (s *sandbox) key(t testing.TB) Key {
	t.Helper()
	k, err := statKey(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// addVeth creates a veth pair, moves one end into the sandbox and gives it addrs (host: the host
// end gets them and nothing moves). It returns the host end's name.
func (s *sandbox) addVeth(t testing.TB, addrs ...netip.Addr) string {
	t.Helper()
	a, b := "nta"+randHex(8), "ntb"+randHex(8)
	run(t, "ip", "link", "add", a, "type", "veth", "peer", "name", b)
	t.Cleanup(func() { exec.Command("ip", "link", "del", a).Run() })
	if s.host {
		for _, ip := range addrs {
			run(t, "ip", "addr", "add", prefix(ip), "dev", a, "nodad")
		}
		return a
	}
	target := s.Name
	if target == "" {
		target = strconv.Itoa(s.PID)
	}
	run(t, "ip", "link", "set", b, "netns", target)
	for _, ip := range addrs {
		run(t, "nsenter", "--net="+s.Path, "ip", "addr", "add", prefix(ip), "dev", b, "nodad")
	}
	run(t, "nsenter", "--net="+s.Path, "ip", "link", "set", b, "up")
	return a
}

// delAddr removes ip from the sandbox's veth.
func (s *sandbox) delAddr(t testing.TB, ip netip.Addr) {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+s.Path, "ip", "-o", "addr", "show", "to", prefix(ip)).Output()
	fields := strings.Fields(string(out))
	if err != nil || len(fields) < 2 {
		t.Fatalf("find %s in %s: %v %q", ip, s.Path, err, out)
	}
	run(t, "nsenter", "--net="+s.Path, "ip", "addr", "del", prefix(ip), "dev", fields[1])
}

// pinNamed bind-mounts the sandbox's namespace as dir/name, as containerd and CRI-O do.
func (s *sandbox) pinNamed(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "cni-"+newUID())
	if err := os.WriteFile(p, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(s.Path, p, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount %s on %s: %v", s.Path, p, err)
	}
	t.Cleanup(func() { unix.Unmount(p, unix.MNT_DETACH) })
	return p
}

func prefix(ip netip.Addr) string { return netip.PrefixFrom(ip, ip.BitLen()).String() }

// Cgroup hierarchies of this machine, from /proc/self/mountinfo.
type hierarchy struct {
	Name string // "v1-pids", "v2"
	Root string // its mount point
}

func cgroupHierarchies(t testing.TB) []hierarchy {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var v1, v2 string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 98:0 / /sys/fs/cgroup/pids rw,relatime shared:1 - cgroup cgroup rw,pids
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if !ok || len(pf) < 5 || len(qf) < 3 || pf[3] != "/" {
			continue
		}
		switch {
		case qf[0] == "cgroup2" && v2 == "":
			v2 = pf[4]
		case qf[0] == "cgroup" && v1 == "" && strings.Contains(","+qf[2]+",", ",pids,"):
			v1 = pf[4]
		}
	}
	var hs []hierarchy
	if v1 != "" {
		hs = append(hs, hierarchy{"v1-pids", v1})
	}
	if v2 != "" {
		hs = append(hs, hierarchy{"v2", v2})
	}
	if len(hs) == 0 {
		t.Fatal("no cgroup hierarchy mounted (want cgroup v1 pids or cgroup v2)")
	}
	return hs
}

// Kubelet cgroup layouts: the path of a container's cgroup for a pod UID, relative to the root.
var layouts = []struct {
	Name string
	Path func(uid string) string
}{
	{"cgroupfs-besteffort", func(uid string) string { return "kubepods/besteffort/pod" + uid + "/" + randHex(12) }},
	{"cgroupfs-guaranteed", func(uid string) string { return "kubepods/pod" + uid + "/" + randHex(12) }},
	{"systemd-burstable", func(uid string) string {
		return "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(uid, "-", "_") +
			".slice/cri-containerd-" + randHex(12) + ".scope"
	}},
}

// podCgroup returns a container cgroup directory for uid in the first hierarchy, default layout.
func podCgroup(t testing.TB, uid string) string {
	return filepath.Join(cgroupHierarchies(t)[0].Root, layouts[0].Path(uid))
}

// mkCgroup creates dir and its missing parents, removing those it created at cleanup (a parent
// another test still uses stays). Parents shared with concurrent tests may vanish under us: retry.
func mkCgroup(t testing.TB, dir string) {
	t.Helper()
	var created []string
	var err error
	for range 5 {
		created, err = mkdirs(dir)
		t.Cleanup(func() {
			for i := len(created) - 1; i >= 0; i-- {
				os.Remove(created[i])
			}
		})
		if err == nil {
			return
		}
	}
	t.Fatalf("create cgroup %s: %v", dir, err)
}

func mkdirs(dir string) (created []string, err error) {
	if _, err := os.Stat(dir); err == nil {
		return nil, nil
	}
	parent := filepath.Dir(dir)
	created, err = mkdirs(parent)
	if err != nil {
		return created, err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return created, err
	} else if err == nil {
		created = append(created, dir)
	}
	return created, nil
}

// cniRecord returns a CNI result cache record as libcni writes it for containerd and CRI-O
// (kind cniCacheV1, the runtime's CNI arguments, the result), for sandbox sandboxID of pod uid
// whose namespace is at netnsPath. Tests edit the map to break it.
func cniRecordFixture(uid, sandboxID, netnsPath string, ips ...netip.Addr) map[string]any {
	var res []map[string]any
	for _, ip := range ips {
		res = append(res, map[string]any{"address": prefix(ip), "interface": 2})
	}
	return map[string]any{
		"kind":        "cniCacheV1",
		"containerId": sandboxID,
		"config":      "eyJjbmlWZXJzaW9uIjoiMS4wLjAiLCJuYW1lIjoiYnJpZGdlIn0=",
		"ifName":      "eth0",
		"networkName": "bridge",
		"netns":       netnsPath,
		"cniArgs": [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "app"}, {"K8S_POD_NAME", "web"},
			{"K8S_POD_INFRA_CONTAINER_ID", sandboxID}, {"K8S_POD_UID", uid}},
		"capabilityArgs": map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{"a": "b"}},
		"result":         map[string]any{"cniVersion": "1.0.0", "ips": res},
	}
}

// writeRecord writes rec into dir as <network>-<sandbox id>-<ifname>, root 0600 like libcni, and
// returns its path.
func writeRecord(t testing.TB, dir string, rec map[string]any) string {
	t.Helper()
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%v-%v-%v", rec["networkName"], rec["containerId"], rec["ifName"])
	return writeRecordFile(t, dir, name, data)
}

func writeRecordFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// recordFor writes a valid record of pod uid naming the namespace at netnsPath.
func recordFor(t testing.TB, dir, uid, netnsPath string) string {
	t.Helper()
	return writeRecord(t, dir, cniRecordFixture(uid, randHex(64), netnsPath))
}

// enter starts a long-lived process inside the sandbox's namespace (a process that setns'ed, as
// nsenter does), moved into cgroupDir if given (a privileged pod's process, or a container of the
// pod itself), else left in the test's own cgroup (a host process).
func (s *sandbox) enter(t testing.TB, cgroupDir string) int {
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+s.Path, "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatalf("nsenter into %s: %v", s.Path, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	if cgroupDir != "" {
		mkCgroup(t, cgroupDir)
		if err := os.WriteFile(filepath.Join(cgroupDir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			t.Fatalf("move pid %d into cgroup %s: %v", pid, cgroupDir, err)
		}
	}
	// nsenter execs sleep in the namespace: wait until the process runs there.
	want := s.key(t)
	for range 200 {
		if k, err := statKey(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && k == want {
			return pid
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pid %d did not enter %s", pid, s.Path)
	return 0
}

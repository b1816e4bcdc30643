package realnode

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// LockPath is the machine-wide lock a node holds for its whole life: one real node per machine
// (test binaries of `go test ./...` run in parallel).
func LockPath() string {
	return filepath.Join(os.TempDir(), "istio-pod-network-controller-real-node.lock")
}

// lockMachine takes the machine-wide flock, waiting (and saying so once) while another node holds it.
func lockMachine(ctx context.Context, say func(string, ...any)) (*os.File, error) {
	f, err := os.OpenFile(LockPath(), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the real-node lock: %w", err)
	}
	for waited := false; ; waited = true {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			_ = f.Truncate(0)
			fmt.Fprintf(f, "pid %d\n", os.Getpid())
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", LockPath(), err)
		}
		if !waited {
			holder, _ := os.ReadFile(LockPath())
			say("waiting for another real node on this machine to stop (%s holds %s)", strings.TrimSpace(string(holder)), LockPath())
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for the real-node lock %s: %w", LockPath(), ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// hostSysctls are the host settings the kubelet (vm.*, kernel.*) and the bridge plugin
// (ip_forward) change; they are restored at Stop.
var hostSysctls = []string{"vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "net.ipv4.ip_forward"}

func sysctlPath(name string) string { return "/proc/sys/" + strings.ReplaceAll(name, ".", "/") }

func saveSysctls() (map[string]string, error) {
	saved := map[string]string{}
	for _, s := range hostSysctls {
		b, err := os.ReadFile(sysctlPath(s))
		if err != nil {
			return nil, fmt.Errorf("read sysctl %s: %w", s, err)
		}
		saved[s] = strings.TrimSpace(string(b))
	}
	return saved, nil
}

func restoreSysctls(saved map[string]string) error {
	var errs []error
	for s, v := range saved {
		if err := os.WriteFile(sysctlPath(s), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", s, v, err))
		}
	}
	return errors.Join(errs...)
}

// hierarchies are the cgroup v1 hierarchies mounted under /sys/fs/cgroup (cpu,cpuacct and its
// links count once).
func hierarchies() ([]string, error) { return cgroupMounts("cgroup") }

// allHierarchies adds the cgroup v2 hierarchy of a hybrid host (/sys/fs/cgroup/unified), where
// runc also makes the pods' cgroups.
func allHierarchies() ([]string, error) { return cgroupMounts("cgroup", "cgroup2") }

func cgroupMounts(types ...string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		sep := indexOf(f, "-")
		if sep < 0 || sep+1 >= len(f) || indexOf(types, f[sep+1]) < 0 || !strings.HasPrefix(f[4], "/sys/fs/cgroup/") {
			continue
		}
		out = append(out, f[4])
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup v1 hierarchy under /sys/fs/cgroup: the real node is set up for cgroup v1 hosts")
	}
	return out, nil
}

func indexOf(f []string, s string) int {
	for i, v := range f {
		if v == s {
			return i
		}
	}
	return -1
}

// makeCgroupRoot creates CgroupRoot in every v1 hierarchy (the kubelet refuses to start otherwise),
// with the cpuset hierarchy's cpus and mems copied from its parent.
func makeCgroupRoot() error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		dir := h + CgroupRoot
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(h, f))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
				return fmt.Errorf("cgroup %s: write %s: %w", dir, f, err)
			}
		}
	}
	return nil
}

// cgroupPIDs lists the processes in CgroupRoot's tree, in any hierarchy.
func cgroupPIDs() []int {
	hs, _ := allHierarchies()
	seen := map[int]bool{}
	var out []int
	for _, h := range hs {
		_ = filepath.WalkDir(h+CgroupRoot, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(path)
			for _, s := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(s); err == nil && !seen[pid] {
					seen[pid] = true
					out = append(out, pid)
				}
			}
			return nil
		})
	}
	return out
}

// removeCgroupRoot kills what is left in CgroupRoot's tree and removes its cgroups, deepest first.
// Nothing outside CgroupRoot is touched (the simulated node's /kubepods stays).
func removeCgroupRoot() error {
	for range 20 {
		pids := cgroupPIDs()
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	hs, err := allHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		var dirs []string
		_ = filepath.WalkDir(h+CgroupRoot, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// shimPIDs lists the containerd shims started for socket (their command line names it).
func shimPIDs(socket string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := bytes.Split(cmdline, []byte{0})
		if len(args) > 0 && strings.HasPrefix(filepath.Base(string(args[0])), "containerd-shim") &&
			bytes.Contains(cmdline, []byte(socket)) {
			out = append(out, pid)
		}
	}
	return out
}

// unmountUnder detaches every mount point under dir (the kubelet's pod volumes), deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			points = append(points, fields[4])
		}
	}
	var errs []error
	for i := len(points) - 1; i >= 0; i-- {
		if err := syscall.Unmount(points[i], syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", points[i], err))
		}
	}
	return errors.Join(errs...)
}

// deleteBridge removes the node's bridge if it is there.
func deleteBridge() error {
	link, err := netlink.LinkByName(Bridge)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("find bridge %s: %w", Bridge, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("delete bridge %s: %w", Bridge, err)
	}
	return nil
}

// NodeIP returns the first global IPv4 address of the interface that holds the default route
// (eth0 here): the kubelet's node IP and where the API server listens for pods.
func NodeIP() (string, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() != "0.0.0.0/0" {
			continue
		}
		link, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if a.IP.IsGlobalUnicast() && !a.IP.Equal(net.IPv4zero) {
				return a.IP.String(), nil
			}
		}
	}
	return "", errors.New("no IPv4 address on the interface of the default route: the real node needs a non-loopback node IP")
}

func run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output() // stdout alone: crictl warns on stderr about its missing config file
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s%s", filepath.Base(bin), strings.Join(args, " "), err, out, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// LogTail returns the last n lines of containerd's and the kubelet's logs and of the control
// plane's, for failure reports.
func (n *Node) LogTail(lines int) string {
	var b strings.Builder
	for _, c := range []string{"containerd", "kubelet"} {
		data, err := os.ReadFile(n.d.logPath(c))
		if err != nil {
			continue
		}
		all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(all) > lines {
			all = all[len(all)-lines:]
		}
		fmt.Fprintf(&b, "\n--- last %d lines of %s ---\n%s", lines, n.d.logPath(c), strings.Join(all, "\n"))
	}
	if n.Cluster != nil {
		b.WriteString(n.Cluster.LogTail(lines))
	}
	return b.String()
}

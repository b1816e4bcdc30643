package kubelet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

// pauseUID is the user of the sandbox process (the pause image's).
const pauseUID = 65535

// network is the node's side of pod networking: the bridge and where namespaces are registered.
type network struct {
	bridge      string
	v4, v6      netip.Prefix
	netnsDir    string
	madeNetns   bool
	sleep       string // the pause process's binary
	hostNetnsID string
}

// newNetwork creates the node bridge with the gateway addresses, replacing a leftover bridge of the
// same name that has no ports; it refuses to start when another interface holds an address in the
// pod prefixes.
func newNetwork(o Options, v4, v6 netip.Prefix) (*network, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("kubelet: the simulator needs root (network namespaces, veths, cgroups)")
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return nil, fmt.Errorf("kubelet: the pause process needs sleep(1): %w", err)
	}
	n := &network{bridge: o.Bridge, v4: v4, v6: v6, netnsDir: o.NetnsDir, sleep: sleep}
	id, err := contract.CurrentNetnsID()
	if err != nil {
		return nil, err
	}
	n.hostNetnsID = id.String()
	if err := n.makeBridge(); err != nil {
		return nil, err
	}
	if n.netnsDir != "" {
		if _, err := os.Stat(n.netnsDir); errors.Is(err, os.ErrNotExist) {
			n.madeNetns = true
		}
		if err := os.MkdirAll(n.netnsDir, 0o755); err != nil {
			_ = n.close()
			return nil, fmt.Errorf("kubelet: netns directory: %w", err)
		}
	}
	return n, nil
}

func (n *network) makeBridge() error {
	if l, err := netlink.LinkByName(n.bridge); err == nil {
		links, err := netlink.LinkList()
		for i := 0; i < 3 && errors.Is(err, netlink.ErrDumpInterrupted); i++ { // links changed meanwhile
			links, err = netlink.LinkList()
		}
		if err != nil {
			return fmt.Errorf("kubelet: list links: %w", err)
		}
		for _, x := range links {
			if x.Attrs().MasterIndex == l.Attrs().Index {
				return fmt.Errorf("kubelet: bridge %q exists and has port %q: is another simulated node running? (delete it with: ip link del %s)",
					n.bridge, x.Attrs().Name, n.bridge)
			}
		}
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("kubelet: delete leftover bridge %q: %w", n.bridge, err)
		}
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	for i := 0; i < 3 && errors.Is(err, netlink.ErrDumpInterrupted); i++ {
		addrs, err = netlink.AddrList(nil, netlink.FAMILY_ALL)
	}
	if err != nil {
		return fmt.Errorf("kubelet: list addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && (n.v4.Masked().Contains(ip.Unmap()) || n.v6.Masked().Contains(ip)) {
			name := strconv.Itoa(a.LinkIndex)
			if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			return fmt.Errorf("kubelet: interface %q already holds %s, inside the pod prefixes %s and %s", name, ip, n.v4.Masked(), n.v6.Masked())
		}
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.bridge}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("kubelet: create bridge %q: %w", n.bridge, err)
	}
	for _, p := range []netip.Prefix{n.v4, n.v6} {
		if err := netlink.AddrAdd(br, addr(p.Addr(), p.Bits())); err != nil {
			_ = netlink.LinkDel(br)
			return fmt.Errorf("kubelet: bridge %q: add %s: %w", n.bridge, p, err)
		}
	}
	if err := netlink.LinkSetUp(br); err != nil {
		_ = netlink.LinkDel(br)
		return fmt.Errorf("kubelet: bridge %q: up: %w", n.bridge, err)
	}
	return nil
}

// addr is a netlink address; IPv6 ones skip duplicate address detection so they work at once.
func addr(ip netip.Addr, bits int) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, ip.BitLen())}}
	if ip.Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// close deletes the bridge and the netns directory if the simulator made it.
func (n *network) close() error {
	var errs []error
	if l, err := netlink.LinkByName(n.bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %q: %w", n.bridge, err))
		}
	}
	if n.madeNetns {
		_ = os.Remove(n.netnsDir)
	}
	return errors.Join(errs...)
}

// create makes sb's namespace (registered when a netns directory is set and register), its veth to the bridge,
// addresses and default routes, and starts the pause process in it and in the pod's cgroups.
func (n *network) create(sb *sandbox, register bool, pauseLog string) (err error) {
	defer func() {
		if err != nil {
			n.destroy(sb)
		}
	}()
	pause := procSpec{argv: []string{n.sleep, "infinity"}, env: []string{"PATH=/usr/bin:/bin"},
		uid: pauseUID, gid: pauseUID, log: pauseLog, cgroups: leafCgroups(sb.cgroups, containerID(sb.info.ID, "POD", 0))}
	if !sb.info.HostNetwork {
		if n.netnsDir != "" && register {
			sb.register = filepath.Join(n.netnsDir, "cni-"+sb.info.ID)
		}
		if sb.ns, err = newNetns(sb.register); err != nil {
			return err
		}
		sb.info.HostVeth = "pncv" + strings.ReplaceAll(sb.info.ID, "-", "")[:8]
		if err := n.plumb(sb); err != nil {
			return err
		}
		id, err := sb.ns.ID()
		if err != nil {
			return err
		}
		sb.info.NetnsID, sb.info.Inode = id.String(), sb.ns.Inode()
		pause.ns = sb.ns
	}
	if sb.pause, err = startProc(pause); err != nil {
		return fmt.Errorf("start the pause process: %w", err)
	}
	sb.info.PausePID = sb.pause.pid
	switch {
	case sb.register != "":
		sb.info.NetnsPath = sb.register
	default:
		sb.info.NetnsPath = fmt.Sprintf("/proc/%d/ns/net", sb.pause.pid)
	}
	if sb.info.HostNetwork {
		sb.info.NetnsID = n.hostNetnsID
	}
	return nil
}

// plumb connects sb's namespace to the bridge: veth (eth0 inside), addresses, lo and eth0 up,
// default routes through the bridge's addresses.
func (n *network) plumb(sb *sandbox) error {
	br, err := netlink.LinkByName(n.bridge)
	if err != nil {
		return fmt.Errorf("bridge %q: %w", n.bridge, err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: sb.info.HostVeth, MasterIndex: br.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(sb.ns.Fd())),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %q: %w", sb.info.HostVeth, err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return fmt.Errorf("veth %q up: %w", sb.info.HostVeth, err)
	}
	h, err := netlink.NewHandleAt(vnetns.NsHandle(int(sb.ns.Fd())))
	if err != nil {
		return fmt.Errorf("netlink in the pod namespace: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	for _, ip := range sb.info.IPs {
		p := n.v4
		if ip.Is6() {
			p = n.v6
		}
		if err := h.AddrAdd(eth0, addr(ip, p.Bits())); err != nil {
			return fmt.Errorf("eth0: add %s/%d: %w", ip, p.Bits(), err)
		}
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("eth0 up: %w", err)
	}
	for _, ip := range sb.info.IPs {
		gw := n.v4.Addr()
		if ip.Is6() {
			gw = n.v6.Addr()
		}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	return nil
}

// destroy kills the pause process and removes the namespace, its registration and the veth.
func (n *network) destroy(sb *sandbox) {
	if sb.pause != nil {
		sb.pause.kill()
	}
	if sb.info.HostVeth != "" {
		if l, err := netlink.LinkByName(sb.info.HostVeth); err == nil {
			_ = netlink.LinkDel(l)
		}
	}
	if sb.register != "" {
		_ = unix.Unmount(sb.register, unix.MNT_DETACH)
		_ = os.Remove(sb.register)
	}
	if sb.ns != nil {
		_ = sb.ns.Close()
	}
}

// newNetns creates a network namespace on a thread of its own and returns it held by fd; with a
// register path it is also bind-mounted there, as `ip netns add` and containerd do.
func newNetns(register string) (*netns.Handle, error) {
	type result struct {
		h   *netns.Handle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		host, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer host.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("unshare(CLONE_NEWNET): %w", err)}
			return
		}
		var h *netns.Handle
		if register != "" {
			if err = bindNetns(register); err == nil {
				h, err = netns.Open(register)
			}
		} else {
			h, err = netns.Open("/proc/thread-self/ns/net")
		}
		if serr := unix.Setns(int(host.Fd()), unix.CLONE_NEWNET); serr != nil {
			// The thread is stuck in the new namespace: it stays locked and ends with this goroutine.
			if h != nil {
				_ = h.Close()
			}
			ch <- result{err: fmt.Errorf("return to the host network namespace: %w", serr)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{h, err}
	}()
	r := <-ch
	return r.h, r.err
}

// bindNetns pins the calling thread's network namespace at path.
func bindNetns(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("register namespace: %w", err)
	}
	f.Close()
	if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("register namespace: bind mount to %s: %w", path, err)
	}
	return nil
}

// startProc starts a process in spec.ns. The process is forked from a goroutine that keeps its OS
// thread locked (inside the namespace) until the process exits: the child inherits the thread's
// namespace, and its parent-death signal, which the kernel sends when that thread ends, stays
// meaningful. The thread is never reused.
func startProc(spec procSpec) (*proc, error) {
	logf, err := os.OpenFile(spec.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(spec.argv[0], spec.argv[1:]...)
	cmd.Env = spec.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Chroot:     spec.chroot,
		Credential: &syscall.Credential{Uid: spec.uid, Gid: spec.gid, Groups: spec.groups},
	}
	if spec.chroot != "" {
		cmd.Dir = "/"
	}
	p := &proc{log: spec.log, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		defer close(p.done)
		defer logf.Close()
		if spec.ns != nil {
			if err := unix.Setns(int(spec.ns.Fd()), unix.CLONE_NEWNET); err != nil {
				started <- fmt.Errorf("enter network namespace: %w", err)
				return
			}
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		if err := joinCgroups(spec.cgroups, p.pid); err != nil {
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
			_ = cmd.Wait()
			removeCgroupDirs(spec.cgroups)
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		removeCgroupDirs(spec.cgroups)
	}()
	if err := <-started; err != nil {
		<-p.done
		return nil, err
	}
	return p, nil
}

// kill kills the process group and waits until the process has exited.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	<-p.done
}

// makePodCgroups creates the pod's cgroup in each configured hierarchy and returns the pod
// directories; the shared parents it had to create are removed by Stop.
func (k *Kubelet) makePodCgroups(pod *corev1.Pod) ([]string, error) {
	rel := strings.Split(podCgroupPath(pod), "/")
	var dirs []string
	for _, h := range k.opts.CgroupHierarchies {
		base := filepath.Join(k.opts.CgroupRoot, h)
		if _, err := os.Stat(filepath.Join(base, "cgroup.procs")); err != nil {
			return nil, fmt.Errorf("cgroup hierarchy %q is not mounted at %s: %w", h, base, err)
		}
		cur := base
		for i, seg := range rel {
			cur = filepath.Join(cur, seg)
			err := os.Mkdir(cur, 0o755)
			switch {
			case err == nil && i < len(rel)-1:
				k.mu.Lock()
				k.cgroups = append(k.cgroups, cur)
				k.mu.Unlock()
			case err != nil && !errors.Is(err, os.ErrExist):
				return nil, fmt.Errorf("create cgroup %s: %w", cur, err)
			}
		}
		dirs = append(dirs, cur)
	}
	return dirs, nil
}

// joinCgroups creates each directory and moves pid into it.
func joinCgroups(dirs []string, pid int) error {
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", d, err)
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("join cgroup %s: %w", d, err)
		}
	}
	return nil
}

package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

// Options configure Start. Client and WaitBinary are required; the zero value of every other
// field means its default.
type Options struct {
	// Client is an admin client: the simulator lists and watches pods, patches pods/status and
	// confirms deletions.
	Client kubernetes.Interface
	// NodeName is the node whose pods are simulated (DefaultNodeName).
	NodeName string
	// NodeIP is the IP of hostNetwork pods and the status hostIP; "" reads the Node's InternalIP.
	NodeIP string
	// WaitBinary is the path of a static istio-pod-network-wait binary (the wait container's image).
	WaitBinary string
	// WaitContainerName is the name of the wait init container (DefaultWaitContainerName).
	WaitContainerName string
	// StateDir holds per-pod root file systems, downward-API volumes and container logs. "" makes a
	// temporary directory that Stop removes.
	StateDir string
	// NetnsDir, when set, registers each pod namespace as NetnsDir/cni-<uuid> (a bind mount, as
	// containerd does); empty leaves namespaces unnamed, held only by their processes.
	NetnsDir string
	// Bridge is the name of the node bridge (DefaultBridge). An existing bridge of that name with no
	// ports left (from a crashed run) is replaced; one with ports is an error.
	Bridge string
	// PodCIDRv4 and PodCIDRv6 are the bridge's addresses with the pod prefixes (DefaultPodCIDRv4,
	// DefaultPodCIDRv6); pods get addresses from the same prefixes.
	PodCIDRv4, PodCIDRv6 string
	// CgroupRoot is where the cgroup hierarchies are mounted (DefaultCgroupRoot).
	CgroupRoot string
	// CgroupHierarchies are the cgroup v1 hierarchies (directories under CgroupRoot) the pods'
	// processes are placed in; nil means {"pids"}.
	CgroupHierarchies []string
	// Workers is how many pods are synced at once (DefaultWorkers): volumes, wait container, status.
	Workers int
	// SandboxWorkers is how many sandboxes are created at once (DefaultSandboxWorkers). Creation
	// runs beside the sync workers, so a burst of new pods does not hold up the annotation
	// refreshes and status updates of the pods already running, as with the kubelet's pod workers.
	SandboxWorkers int
	// OnWaitExit, when set, is called each time a wait process exits, before the exit is reported
	// in the pod status, while the pod's namespace still exists: the place to check that no pod is
	// released without verified rules. It must not block for long.
	OnWaitExit func(ctx context.Context, e WaitExit)
	// Log receives one line per pod transition. Nil discards them.
	Log io.Writer
}

// WaitExit describes a wait process that exited.
type WaitExit struct {
	// Pod is the pod as the simulator last saw it (a copy): its annotations are the ones the wait
	// binary's downward-API file held when it exited.
	Pod *corev1.Pod
	// Sandbox is the sandbox the wait process ran in.
	Sandbox Sandbox
	// ExitCode is the wait binary's exit code (-1 when killed by a signal).
	ExitCode int
	// Message is its termination message.
	Message string
	// Netns is the pod's network namespace, valid only during the call; nil for hostNetwork pods.
	Netns *netns.Handle
}

// Sandbox describes a pod's sandbox.
type Sandbox struct {
	// ID is the sandbox ID (also the suffix of the registered namespace's name).
	ID string
	// Generation counts the sandboxes of this pod: 1 for the first, 2 after one Recreate, ...
	Generation int
	// HostNetwork: the pod uses the node's namespace.
	HostNetwork bool
	// NetnsPath is the registered namespace (NetnsDir/cni-<id>) or /proc/<pause pid>/ns/net.
	NetnsPath string
	// NetnsID is the namespace's identity as the controller annotates it (SO_NETNS_COOKIE).
	NetnsID string
	// Inode is the namespace's nsfs inode.
	Inode uint64
	// IPs are the pod IPs (IPv4 first).
	IPs []netip.Addr
	// HostVeth is the bridge side of the pod's veth ("" for hostNetwork pods).
	HostVeth string
	// PausePID is the sandbox process.
	PausePID int
}

// withDefaults validates o and fills in the defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Client == nil {
		return o, errors.New("kubelet options: Client must be set")
	}
	if o.WaitBinary == "" {
		return o, errors.New("kubelet options: WaitBinary must be set (a static istio-pod-network-wait)")
	}
	abs, err := filepath.Abs(o.WaitBinary)
	if err != nil {
		return o, fmt.Errorf("kubelet options: WaitBinary %q: %w", o.WaitBinary, err)
	}
	if st, err := os.Stat(abs); err != nil || st.IsDir() {
		return o, fmt.Errorf("kubelet options: WaitBinary %q: not a file (%v)", o.WaitBinary, err)
	}
	o.WaitBinary = abs
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.NodeName, DefaultNodeName)
	def(&o.WaitContainerName, DefaultWaitContainerName)
	def(&o.Bridge, DefaultBridge)
	def(&o.PodCIDRv4, DefaultPodCIDRv4)
	def(&o.PodCIDRv6, DefaultPodCIDRv6)
	def(&o.CgroupRoot, DefaultCgroupRoot)
	if len(o.Bridge) > 15 {
		return o, fmt.Errorf("kubelet options: Bridge %q: longer than 15 characters", o.Bridge)
	}
	if o.CgroupHierarchies == nil {
		o.CgroupHierarchies = []string{"pids"}
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.SandboxWorkers <= 0 {
		o.SandboxWorkers = DefaultSandboxWorkers
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.NetnsDir != "" && !filepath.IsAbs(o.NetnsDir) {
		return o, fmt.Errorf("kubelet options: NetnsDir %q: want an absolute path", o.NetnsDir)
	}
	for name, s := range map[string]string{"PodCIDRv4": o.PodCIDRv4, "PodCIDRv6": o.PodCIDRv6} {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return o, fmt.Errorf("kubelet options: %s %q: %w", name, s, err)
		}
		if (name == "PodCIDRv4") != p.Addr().Is4() || p.Bits() > p.Addr().BitLen()-4 {
			return o, fmt.Errorf("kubelet options: %s %q: want an IPv%s gateway address with a prefix of room for pods",
				name, s, map[bool]string{true: "4", false: "6"}[name == "PodCIDRv4"])
		}
	}
	return o, nil
}

// ipAllocator hands out pod addresses: offset n within the IPv4 prefix, and the same offset within
// the IPv6 prefix for dual-stack pods. Offsets 0 and 1 and the gateway's are never used.
type ipAllocator struct {
	v4, v6 netip.Prefix
	used   map[uint32]bool
	next   uint32
	size   uint32
}

func newIPAllocator(v4, v6 netip.Prefix) *ipAllocator {
	size := uint32(1) << min(32-v4.Bits(), 24)
	return &ipAllocator{v4: v4, v6: v6, used: map[uint32]bool{}, next: 2, size: size}
}

// allocate returns a free offset.
func (a *ipAllocator) allocate() (uint32, error) {
	for range a.size {
		n := a.next
		a.next++
		if a.next >= a.size-1 {
			a.next = 2
		}
		if n < 2 || a.used[n] || a.addr4(n) == a.v4.Addr() {
			continue
		}
		a.used[n] = true
		return n, nil
	}
	return 0, fmt.Errorf("pod CIDR %s is full", a.v4.Masked())
}

func (a *ipAllocator) release(n uint32) { delete(a.used, n) }

func (a *ipAllocator) addr4(n uint32) netip.Addr {
	b := a.v4.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (a *ipAllocator) addr6(n uint32) netip.Addr {
	b := a.v6.Masked().Addr().As16()
	for i := 15; i >= 12 && n > 0; i-- {
		sum := uint32(b[i]) + n&0xff
		b[i] = byte(sum)
		n = n>>8 + sum>>8
	}
	return netip.AddrFrom16(b)
}

// ips returns the addresses of offset n.
func (a *ipAllocator) ips(n uint32, dual bool) []netip.Addr {
	out := []netip.Addr{a.addr4(n)}
	if dual {
		out = append(out, a.addr6(n))
	}
	return out
}

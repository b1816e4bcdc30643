package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// openFDs counts the namespace file descriptors this package holds open (see OpenFDs).
var openFDs atomic.Int64

// OpenFDs returns how many network namespace file descriptors this package holds open: every
// Handle not yet closed, including the Finders' caches (handles sharing one fd count once).
func OpenFDs() int64 { return openFDs.Load() }

// Handle is an open network namespace, held by file descriptor: it stays the same namespace (and
// keeps it alive) however paths change. Methods are safe for concurrent use. Close it when done.
type Handle struct {
	ref    *nsRef
	path   string
	source Strategy
	proof  *Proof // set by Finder.Find; shared by clones, never changed after
	closed atomic.Bool
}

// nsRef is the fd shared by a Handle and its clones (a Finder's cache hands out clones).
type nsRef struct {
	ns   ns.NetNS
	key  Key
	refs atomic.Int64

	mu sync.Mutex
	id contract.NetnsID // zero until read
	// nsid is the namespace's nsid in the Finder's own namespace (see addrReader), valid when
	// hasNsid. The fd keeps the namespace alive, so its nsid cannot change or be reused meanwhile.
	nsid    int32
	hasNsid bool
}

// Open opens the network namespace at path: a named namespace (/run/netns/<name>) or a
// /proc/<pid>/ns/net (which needs ptrace rights over the process). It fails if path is not a
// network namespace.
func Open(path string) (*Handle, error) {
	n, err := ns.GetNS(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %q: %w", path, err)
	}
	fd := int(n.Fd())
	if t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE); err == nil && t != unix.CLONE_NEWNET {
		n.Close()
		return nil, fmt.Errorf("open network namespace %q: it is a namespace of another type (%#x)", path, t)
	} else if err != nil && !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) {
		n.Close()
		return nil, fmt.Errorf("open network namespace %q: NS_GET_NSTYPE: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		n.Close()
		return nil, fmt.Errorf("open network namespace %q: fstat: %w", path, err)
	}
	ref := &nsRef{ns: n, key: Key{Dev: st.Dev, Ino: st.Ino}}
	ref.refs.Store(1)
	openFDs.Add(1)
	return &Handle{ref: ref, path: path}, nil
}

// clone returns another Handle on the same fd; each must be closed.
func (h *Handle) clone() *Handle {
	h.ref.refs.Add(1)
	return &Handle{ref: h.ref, path: h.path, source: h.source, proof: h.proof}
}

// Path is where the namespace was opened (informative: the path may since point elsewhere).
func (h *Handle) Path() string { return h.path }

// Inode is the namespace's nsfs inode, as "ip netns identify" and /proc/<pid>/ns/net show it.
// Inodes are reused by the kernel: for display, or to compare namespaces held open.
func (h *Handle) Inode() uint64 { return h.ref.key.Ino }

// Key identifies the namespace among live ones (device and inode).
func (h *Handle) Key() Key { return h.ref.key }

// Same reports whether h and o are the same namespace.
func (h *Handle) Same(o *Handle) bool { return o != nil && h.ref.key == o.ref.key }

// Fd is the namespace's file descriptor (for setns or netlink.NewHandleAt), valid until Close.
func (h *Handle) Fd() uintptr { return h.ref.ns.Fd() }

// Source is the strategy that found the namespace ("" for Open).
func (h *Handle) Source() Strategy { return h.source }

// Proof says how Finder.Find proved the namespace to be the pod's (the zero Proof for Open).
func (h *Handle) Proof() Proof {
	if h.proof == nil {
		return Proof{}
	}
	p := *h.proof
	p.Evidence = append([]Strategy(nil), p.Evidence...)
	p.PIDs = append([]int(nil), p.PIDs...)
	return p
}

// Do runs fn inside the namespace, on an OS thread locked for the duration and unlocked only after
// switching back succeeded. Goroutines fn starts do not run in the namespace.
func (h *Handle) Do(fn func() error) error {
	if h.closed.Load() {
		return fmt.Errorf("network namespace %s (inode %d): handle is closed", h.path, h.ref.key.Ino)
	}
	return enter(int(h.ref.ns.Fd()), fn)
}

// ID returns the namespace's identity for the netns annotation: its SO_NETNS_COOKIE (or its inode
// on kernels before 5.14), read once inside the namespace.
func (h *Handle) ID() (contract.NetnsID, error) {
	h.ref.mu.Lock()
	defer h.ref.mu.Unlock()
	if h.ref.id.Kind != "" {
		return h.ref.id, nil
	}
	var id contract.NetnsID
	err := h.Do(func() error {
		var err error
		id, err = contract.CurrentNetnsID()
		return err
	})
	if err != nil {
		return contract.NetnsID{}, fmt.Errorf("network namespace %s (inode %d): %w", h.path, h.ref.key.Ino, err)
	}
	h.ref.id = id
	return id, nil
}

// netnsid returns the namespace's nsid as r sees it (read, or assigned, once per fd).
func (h *Handle) netnsid(r *addrReader) (int32, error) {
	if h.closed.Load() {
		return 0, fmt.Errorf("network namespace %s (inode %d): handle is closed", h.path, h.ref.key.Ino)
	}
	h.ref.mu.Lock()
	defer h.ref.mu.Unlock()
	if h.ref.hasNsid {
		return h.ref.nsid, nil
	}
	id, err := r.nsid(int(h.ref.ns.Fd()))
	if err != nil {
		return 0, err
	}
	h.ref.nsid, h.ref.hasNsid = id, true
	return id, nil
}

// Addrs lists the IP addresses of every interface in the namespace.
func (h *Handle) Addrs() ([]netip.Addr, error) {
	var out []netip.Addr
	err := h.Do(func() error {
		var list []netlink.Addr
		var err error
		for range 3 { // a dump interrupted by a concurrent change is retried
			if list, err = netlink.AddrList(nil, netlink.FAMILY_ALL); !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			return err
		}
		for _, a := range list {
			if a.IPNet == nil {
				continue
			}
			if ip, ok := netip.AddrFromSlice(a.IPNet.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list addresses in network namespace %s (inode %d): %w", h.path, h.ref.key.Ino, err)
	}
	return out, nil
}

// PodAddrs lists the namespace's own pod addresses, read live: those of Addrs that are neither
// loopback, link-local nor multicast (what the CNI assigned the pod).
func (h *Handle) PodAddrs() ([]netip.Addr, error) {
	all, err := h.Addrs()
	if err != nil {
		return nil, err
	}
	return podAddrs(all), nil
}

// Close releases the handle; the fd is closed when the last handle sharing it is. Closing twice is
// harmless.
func (h *Handle) Close() error {
	if h.closed.Swap(true) {
		return nil
	}
	if h.ref.refs.Add(-1) > 0 {
		return nil
	}
	openFDs.Add(-1)
	return h.ref.ns.Close()
}

package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// An addrReader lists the addresses of other network namespaces from the Finder's own, without
// entering them: an RTM_GETADDR dump carrying IFA_TARGET_NETNSID (Linux 4.20, honoured with
// NETLINK_GET_STRICT_CHK) names the namespace by its nsid, which RTM_GETNSID returns for an open
// namespace fd (RTM_NEWNSID assigns one when it has none). Entering a namespace (Handle.Do: two
// setns, a thread, a netlink socket made inside) costs several times more, and discovery reads
// every named namespace of the node for every new pod, so this is what makes it cheap.
//
// Every read is live: nothing about a namespace's addresses is remembered between Finds. An index
// remembering them per directory entry (name, device, inode), re-reading only new, changed or
// address-less entries and confirming the chosen candidate live, was considered and rejected:
//   - it cannot see that an entry it read with some addresses has since gained the pod's IP (an IP
//     moved into a namespace while the old holder keeps it, a leaked namespace given a reused
//     address, an IPv6 address added after the IPv4 one). The index would then show one holder
//     where there are two, and the pod would be programmed in one of them, where the rule is to
//     resolve by pod UID or report an AmbiguousError. Confirming the candidate live catches an IP
//     that moved away from it, not one that appeared elsewhere;
//   - (device, inode) does not identify a namespace that is not held open: the kernel reuses the
//     inode number of a freed namespace at once, so a deleted and re-created name can show the
//     same inode for another namespace.
//
// Knowing of every change needs either a netlink socket subscribed inside every namespace, which
// holds the namespace open, keeping deleted sandboxes (and any veth and address left in them)
// alive, or one socket with NETLINK_LISTEN_ALL_NSID, which needs CAP_NET_BROADCAST, a capability
// the controller does not have. Reading through the nsid instead costs about 25 µs per namespace
// against about 110 µs entering it (BenchmarkFind), without either drawback.
//
// A reader is one netlink socket, used by one goroutine at a time. The nsids it deals in are those
// of the namespace the socket lives in, which newAddrReader checks to be the Finder's own.
type addrReader struct {
	fd     int
	seq    uint32
	buf    []byte
	broken bool // a socket-level error: do not reuse
}

// errNoTargetNetnsid: the kernel cannot list another namespace's addresses by nsid (too old, or it
// answered for its own namespace). The Finder then reads addresses inside each namespace.
var errNoTargetNetnsid = errors.New("the kernel does not list the addresses of another network namespace by nsid (IFA_TARGET_NETNSID)")

// errDumpInterrupted: the addresses changed during the dump; read again.
var errDumpInterrupted = errors.New("address dump interrupted by a concurrent change")

// readerTimeout bounds one netlink round trip (the kernel answers at once).
const readerTimeout = 5 * time.Second

// newAddrReader opens a reader in the calling thread's network namespace, which must be host (the
// Finder's own), compared by SO_NETNS_COOKIE.
func newAddrReader(host contract.NetnsID) (*addrReader, error) {
	if host.Kind != contract.KindCookie {
		return nil, fmt.Errorf("%w: no SO_NETNS_COOKIE to check the reader's own namespace", errNoTargetNetnsid)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	fail := func(what string, err error) (*addrReader, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink socket: %s: %w", what, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail("bind", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1); err != nil {
		return fail("NETLINK_GET_STRICT_CHK", fmt.Errorf("%w: %w", errNoTargetNetnsid, err))
	}
	tv := unix.NsecToTimeval(readerTimeout.Nanoseconds())
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			return fail("timeout", err)
		}
	}
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return fail("SO_NETNS_COOKIE", err)
	}
	if cookie != host.Value {
		return fail("namespace", fmt.Errorf("the socket is in network namespace cookie:%d, not the Finder's %s", cookie, host))
	}
	return &addrReader{fd: fd, buf: make([]byte, 64<<10)}, nil
}

func (r *addrReader) close() { unix.Close(r.fd) }

// addrs lists the IP addresses of every interface in h's namespace, as Handle.Addrs does.
func (r *addrReader) addrs(h *Handle) ([]netip.Addr, error) {
	nsid, err := h.netnsid(r)
	if err != nil {
		return nil, fmt.Errorf("nsid of network namespace %s (inode %d): %w", h.path, h.ref.key.Ino, err)
	}
	var out []netip.Addr
	for range 3 { // a dump interrupted by a concurrent change is read again
		if out, err = r.dump(nsid); !errors.Is(err, errDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list addresses in network namespace %s (inode %d, nsid %d): %w", h.path, h.ref.key.Ino, nsid, err)
	}
	return out, nil
}

// nsid returns the nsid of the namespace open as fd, assigning one when it has none. The caller
// holds fd open, which keeps the namespace, hence its nsid, alive.
func (r *addrReader) nsid(fd int) (int32, error) {
	for attempt := 0; ; attempt++ {
		id, err := r.getNsid(fd)
		if err != nil || id >= 0 {
			return id, err
		}
		if attempt > 0 {
			return 0, errors.New("no nsid after assigning one")
		}
		// RTM_NEWNSID with NETNSA_NSID -1: the kernel picks a free nsid. EEXIST: another process
		// assigned one meanwhile.
		body := appendAttr(appendAttr(rtgenmsg(), unix.NETNSA_FD, uint32(fd)), unix.NETNSA_NSID, ^uint32(0))
		if err := r.roundTrip(unix.RTM_NEWNSID, unix.NLM_F_ACK, body, nil); err != nil && !errors.Is(err, unix.EEXIST) {
			return 0, fmt.Errorf("assign an nsid: %w", err)
		}
	}
}

// getNsid returns the nsid of the namespace open as fd, or -1 (NETNSA_NSID_NOT_ASSIGNED).
func (r *addrReader) getNsid(fd int) (int32, error) {
	id, found := int32(unix.NETNSA_NSID_NOT_ASSIGNED), false
	body := appendAttr(rtgenmsg(), unix.NETNSA_FD, uint32(fd))
	err := r.roundTrip(unix.RTM_GETNSID, unix.NLM_F_ACK, body, func(typ uint16, data []byte) error {
		if typ != unix.RTM_NEWNSID || len(data) < 4 {
			return nil
		}
		return eachAttr(data[4:], func(t uint16, v []byte) error {
			if t == unix.NETNSA_NSID && len(v) == 4 {
				id, found = int32(binary.NativeEndian.Uint32(v)), true
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("get the nsid: %w", err)
	}
	if !found {
		return 0, errors.New("get the nsid: no NETNSA_NSID in the answer")
	}
	return id, nil
}

// dump lists the IPv4 and IPv6 addresses of the namespace nsid. Every answer must carry
// IFA_TARGET_NETNSID = nsid: a kernel that ignored the request's would have answered with the
// addresses of the reader's own namespace.
func (r *addrReader) dump(nsid int32) ([]netip.Addr, error) {
	var out []netip.Addr
	body := appendAttr(make([]byte, unix.SizeofIfAddrmsg), unix.IFA_TARGET_NETNSID, uint32(nsid)) // AF_UNSPEC: every family
	err := r.roundTrip(unix.RTM_GETADDR, unix.NLM_F_DUMP, body, func(typ uint16, data []byte) error {
		if typ != unix.RTM_NEWADDR || len(data) < unix.SizeofIfAddrmsg {
			return nil
		}
		if family := data[0]; family != unix.AF_INET && family != unix.AF_INET6 {
			return nil // not an IP address (MCTP, ...)
		}
		var local, address []byte
		target := false
		if err := eachAttr(data[unix.SizeofIfAddrmsg:], func(t uint16, v []byte) error {
			switch t {
			case unix.IFA_LOCAL:
				local = v
			case unix.IFA_ADDRESS:
				address = v
			case unix.IFA_TARGET_NETNSID:
				target = len(v) == 4 && int32(binary.NativeEndian.Uint32(v)) == nsid
			}
			return nil
		}); err != nil {
			return err
		}
		if !target {
			return errNoTargetNetnsid
		}
		if local == nil { // IFA_LOCAL is the address; IFA_ADDRESS the peer's on point-to-point links
			local = address
		}
		if ip, ok := netip.AddrFromSlice(local); ok {
			out = append(out, ip.Unmap())
		}
		return nil
	})
	return out, err
}

// roundTrip sends one request (NLM_F_REQUEST is added) and hands every message answering it to fn
// (nil: none expected), until the kernel's acknowledgement, error or end of dump.
func (r *addrReader) roundTrip(typ uint16, flags uint16, body []byte, fn func(typ uint16, data []byte) error) error {
	r.seq++
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(msg[8:], r.seq)
	msg = append(msg, body...)
	if err := r.sock(unix.Sendto(r.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})); err != nil {
		return err
	}
	var fnErr error
	interrupted := false
	for {
		n, _, rflags, _, err := unix.Recvmsg(r.fd, r.buf, nil, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err := r.sock(err); err != nil {
			return err
		}
		if rflags&unix.MSG_TRUNC != 0 {
			r.broken = true
			return errors.New("netlink answer truncated")
		}
		msgs, err := syscall.ParseNetlinkMessage(r.buf[:n])
		if err != nil {
			r.broken = true
			return fmt.Errorf("parse netlink answer: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != r.seq {
				continue // a late answer to an earlier request
			}
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR, unix.NLMSG_DONE:
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return syscall.Errno(-errno)
					}
				}
				switch {
				case fnErr != nil:
					return fnErr
				case interrupted:
					return errDumpInterrupted
				}
				return nil
			default:
				if fn != nil && fnErr == nil {
					fnErr = fn(m.Header.Type, m.Data) // the rest of the answer is still read
				}
			}
		}
	}
}

// sock marks the reader broken on a socket-level error.
func (r *addrReader) sock(err error) error {
	if err != nil {
		r.broken = true
		return fmt.Errorf("netlink: %w", err)
	}
	return nil
}

// rtgenmsg is struct rtgenmsg (AF_UNSPEC), padded to the attribute alignment.
func rtgenmsg() []byte { return make([]byte, 4) }

// appendAttr appends a 32-bit netlink attribute.
func appendAttr(b []byte, typ uint16, v uint32) []byte {
	b = binary.NativeEndian.AppendUint16(b, unix.SizeofRtAttr+4)
	b = binary.NativeEndian.AppendUint16(b, typ)
	return binary.NativeEndian.AppendUint32(b, v)
}

// eachAttr calls fn with the type and value of every netlink attribute in b.
func eachAttr(b []byte, fn func(typ uint16, v []byte) error) error {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			return fmt.Errorf("malformed netlink attribute (length %d of %d bytes)", l, len(b))
		}
		if err := fn(binary.NativeEndian.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[unix.SizeofRtAttr:l]); err != nil {
			return err
		}
		b = b[min(len(b), (l+unix.NLA_ALIGNTO-1)&^(unix.NLA_ALIGNTO-1)):]
	}
	return nil
}

package nft

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/internal/nlbuf"
)

// conn is a netfilter netlink socket used with plain blocking system calls on the calling (locked)
// thread: the kernel queues a request's answer before sendmsg returns, so a round trip costs two
// system calls and no trip through the Go scheduler's network poller.
type conn struct {
	fd  int
	seq uint32
	buf *[]byte // lent by nlbuf until Close
}

// defaultSndbuf is below the kernel's default socket send buffer (net.core.wmem_default).
const defaultSndbuf = 128 << 10

// dial opens a netfilter netlink socket in the calling thread's network namespace.
func dial() (*conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("open netfilter netlink: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind netfilter netlink: %w", err)
	}
	return &conn{fd: fd, buf: nlbuf.Get()}, nil
}

// Close closes the socket.
func (c *conn) Close() error {
	nlbuf.Put(c.buf)
	c.buf = nil
	return unix.Close(c.fd)
}

// send numbers and writes msgs in one sendmsg; it returns the last sequence number.
func (c *conn) send(msgs []netlink.Message) (uint32, error) {
	size := 0
	for i := range msgs {
		size += nlmsgAlign(unix.NLMSG_HDRLEN + len(msgs[i].Data))
	}
	out := make([]byte, 0, size)
	for i := range msgs {
		c.seq++
		h := &msgs[i].Header
		h.Sequence = c.seq
		h.Length = uint32(unix.NLMSG_HDRLEN + len(msgs[i].Data))
		out = binary.NativeEndian.AppendUint32(out, h.Length)
		out = binary.NativeEndian.AppendUint16(out, uint16(h.Type))
		out = binary.NativeEndian.AppendUint16(out, uint16(h.Flags))
		out = binary.NativeEndian.AppendUint32(out, h.Sequence)
		out = binary.NativeEndian.AppendUint32(out, h.PID)
		out = append(out, msgs[i].Data...)
		out = out[:nlmsgAlign(len(out))] // zero padding: the capacity is fresh
	}
	if len(out) > defaultSndbuf {
		// A batch must arrive in one message; nft raises the buffer the same way.
		if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, len(out)); err != nil {
			return 0, fmt.Errorf("netlink send buffer of %d bytes: %w", len(out), err)
		}
	}
	if err := unix.Sendto(c.fd, out, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("netlink send: %w", err)
	}
	return c.seq, nil
}

// receive reads replies until done returns true for one of them; an error reply (other than an
// acknowledgement) ends it with the kernel's errno.
func (c *conn) receive(done func(m netlink.Message) bool) ([]netlink.Message, error) {
	var out []netlink.Message
	for {
		reads, err := c.read()
		if err != nil {
			return nil, err
		}
		for _, b := range reads {
			for len(b) >= unix.NLMSG_HDRLEN {
				l := int(binary.NativeEndian.Uint32(b[:4]))
				if l < unix.NLMSG_HDRLEN || l > len(b) {
					return nil, fmt.Errorf("netlink receive: malformed message of %d bytes", l)
				}
				var m netlink.Message
				if err := m.UnmarshalBinary(b[:l]); err != nil {
					return nil, err
				}
				b = b[min(nlmsgAlign(l), len(b)):]
				if m.Header.Type == netlink.Error && len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
						return nil, fmt.Errorf("netlink: %w", unix.Errno(-errno))
					}
				}
				if done(m) {
					return out, nil
				}
				if m.Header.Type != netlink.Error {
					out = append(out, m)
				}
			}
		}
	}
}

// mmsghdr is struct mmsghdr of recvmmsg(2) (x/sys/unix has the call's number, not the type).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// read waits for the next socket buffer and takes the ones queued behind it as well, in one
// recvmmsg(2) with MSG_WAITFORONE: a dump's last data and its NLMSG_DONE (queued by the kernel
// while the data is read) arrive in one system call instead of two. Each half of c.buf takes one
// (a dump's buffers are at most 32 KiB); the results are one copy, reused by no later read.
func (c *conn) read() ([][]byte, error) {
	const parts = 2
	half := len(*c.buf) / parts
	var iov [parts]unix.Iovec
	var hdrs [parts]mmsghdr
	for i := range parts {
		iov[i].Base = &(*c.buf)[i*half]
		iov[i].SetLen(half)
		hdrs[i].hdr.Iov = &iov[i]
		hdrs[i].hdr.SetIovlen(1)
	}
	for {
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(c.fd), uintptr(unsafe.Pointer(&hdrs[0])), parts, unix.MSG_WAITFORONE, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return nil, fmt.Errorf("netlink receive: %w", errno)
		}
		total := 0
		for i := range int(r) {
			if hdrs[i].hdr.Flags&unix.MSG_TRUNC != 0 {
				return nil, fmt.Errorf("netlink receive: a reply longer than %d bytes", half)
			}
			total += int(hdrs[i].len)
		}
		all := make([]byte, 0, total)
		out := make([][]byte, int(r))
		for i := range out {
			start := len(all)
			all = append(all, (*c.buf)[i*half:i*half+int(hdrs[i].len)]...)
			out[i] = all[start:len(all):len(all)]
		}
		return out, nil
	}
}

func nlmsgAlign(l int) int { return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// dump sends one dump request of type typ for the inet family and returns the replies' attributes.
func (c *conn) dump(typ uint16) ([][]byte, error) {
	replies, err := c.dumpFamily(typ, unix.NFPROTO_INET)
	for i := range replies {
		replies[i] = replies[i][4:]
	}
	return replies, err
}

// dumpFamily sends one dump request of type typ for family (NFPROTO_UNSPEC: every family) and
// returns the replies' data, each starting with its nfgenmsg (the object's family first).
func (c *conn) dumpFamily(typ uint16, family uint8) ([][]byte, error) {
	seq, err := c.send([]netlink.Message{{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ), Flags: netlink.Request | netlink.Dump},
		Data:   nfgen(family),
	}})
	if err != nil {
		return nil, err
	}
	msgs, err := c.receive(func(m netlink.Message) bool { return m.Header.Type == netlink.Done && m.Header.Sequence == seq })
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(msgs))
	for _, m := range msgs {
		if m.Header.Sequence == seq && len(m.Data) >= 4 {
			out = append(out, m.Data)
		}
	}
	return out, nil
}

package nft

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// conn is a netfilter netlink socket used with plain blocking system calls on the calling (locked)
// thread: the kernel queues a request's answer before sendmsg returns, so a round trip costs two
// system calls and no trip through the Go scheduler's network poller.
type conn struct {
	fd  int
	seq uint32
	buf []byte
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
	return &conn{fd: fd, buf: make([]byte, 64<<10)}, nil
}

// Close closes the socket.
func (c *conn) Close() error { return unix.Close(c.fd) }

// send numbers and writes msgs in one sendmsg; it returns the last sequence number.
func (c *conn) send(msgs []netlink.Message) (uint32, error) {
	var out []byte
	for i := range msgs {
		c.seq++
		msgs[i].Header.Sequence = c.seq
		msgs[i].Header.Length = uint32(unix.NLMSG_HDRLEN + len(msgs[i].Data))
		b, err := msgs[i].MarshalBinary()
		if err != nil {
			return 0, err
		}
		out = append(out, b...)
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
		n, _, err := unix.Recvfrom(c.fd, c.buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		// One copy per read (the buffer is reused by the next read): the messages are slices of it.
		for b := append([]byte(nil), c.buf[:n]...); len(b) >= unix.NLMSG_HDRLEN; {
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

func nlmsgAlign(l int) int { return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// dump sends one dump request of type typ for the inet family and returns the replies' attributes.
func (c *conn) dump(typ uint16) ([][]byte, error) {
	seq, err := c.send([]netlink.Message{{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ), Flags: netlink.Request | netlink.Dump},
		Data:   nfgen(unix.NFPROTO_INET),
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
			out = append(out, m.Data[4:])
		}
	}
	return out, nil
}

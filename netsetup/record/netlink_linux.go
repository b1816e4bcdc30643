package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// loIndex is the loopback interface's index: the kernel gives lo index 1 in every network
// namespace (LOOPBACK_IFINDEX). Replies are checked for IFF_LOOPBACK as well.
const loIndex = 1

// recvBuf holds a link message of lo with its statistics many times over.
const recvBuf = 32 << 10

var seq atomic.Uint32

// request is one rtnetlink request on lo: header, ifinfomsg, attributes.
func request(typ uint16, flags uint16, attrs ...[]byte) ([]byte, uint32) {
	s := seq.Add(1)
	n := unix.SizeofNlMsghdr + unix.SizeofIfInfomsg
	for _, a := range attrs {
		n += len(a)
	}
	b := make([]byte, n)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(n))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags|unix.NLM_F_REQUEST)
	ne.PutUint32(b[8:], s)
	// ifinfomsg: family AF_UNSPEC, type 0, index, flags 0, change 0.
	ne.PutUint32(b[unix.SizeofNlMsghdr+4:], loIndex)
	off := unix.SizeofNlMsghdr + unix.SizeofIfInfomsg
	for _, a := range attrs {
		off += copy(b[off:], a)
	}
	return b, s
}

// attr renders one rtattr with its padding.
func attr(typ uint16, payload []byte) []byte {
	l := unix.SizeofRtAttr + len(payload)
	b := make([]byte, rtaAlign(l))
	binary.NativeEndian.PutUint16(b[0:], uint16(l))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[unix.SizeofRtAttr:], payload)
	return b
}

func rtaAlign(n int) int { return (n + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1) }
func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// message is one parsed netlink message.
type message struct {
	typ  uint16
	seq  uint32
	data []byte // after the header
}

// parseMessages splits a datagram into messages; a truncated one is an error.
func parseMessages(b []byte) ([]message, error) {
	var out []message
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(binary.NativeEndian.Uint32(b[0:]))
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return nil, fmt.Errorf("netlink message of length %d in %d bytes", l, len(b))
		}
		out = append(out, message{typ: binary.NativeEndian.Uint16(b[4:]), seq: binary.NativeEndian.Uint32(b[8:]),
			data: b[unix.SizeofNlMsghdr:l]})
		b = b[min(nlmAlign(l), len(b)):]
	}
	return out, nil
}

// link is what a RTM_NEWLINK message says about one interface.
type link struct {
	index    int32
	flags    uint32
	name     string
	alias    string
	hasAlias bool
}

// parseLink parses the body of a RTM_NEWLINK message.
func parseLink(data []byte) (link, error) {
	if len(data) < unix.SizeofIfInfomsg {
		return link{}, fmt.Errorf("link message of %d bytes, shorter than ifinfomsg", len(data))
	}
	l := link{index: int32(binary.NativeEndian.Uint32(data[4:])), flags: binary.NativeEndian.Uint32(data[8:])}
	a := data[unix.SizeofIfInfomsg:]
	for len(a) >= unix.SizeofRtAttr {
		n := int(binary.NativeEndian.Uint16(a[0:]))
		typ := binary.NativeEndian.Uint16(a[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if n < unix.SizeofRtAttr || n > len(a) {
			return link{}, fmt.Errorf("attribute of length %d in %d bytes", n, len(a))
		}
		payload := a[unix.SizeofRtAttr:n]
		switch typ {
		case unix.IFLA_IFNAME:
			l.name = cstring(payload)
		case unix.IFLA_IFALIAS:
			l.alias, l.hasAlias = cstring(payload), true
		}
		a = a[min(rtaAlign(n), len(a)):]
	}
	return l, nil
}

func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// roundTrip sends req on a fresh NETLINK_ROUTE socket of the calling thread's network namespace
// and returns the reply to it: the RTM_NEWLINK body, or nil for an acknowledgement.
func roundTrip(req []byte, s uint32) ([]byte, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, recvBuf)
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not from the kernel
		}
		msgs, err := parseMessages(buf[:n])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if m.seq != s {
				continue
			}
			switch m.typ {
			case unix.NLMSG_ERROR:
				if len(m.data) < 4 {
					return nil, errors.New("netlink: short error message")
				}
				if errno := -int32(binary.NativeEndian.Uint32(m.data)); errno != 0 {
					return nil, unix.Errno(errno)
				}
				return nil, nil
			case unix.RTM_NEWLINK:
				return append([]byte(nil), m.data...), nil
			}
		}
	}
}

// getLo reads lo in the calling thread's network namespace.
func getLo() (link, error) {
	req, s := request(unix.RTM_GETLINK, 0)
	data, err := roundTrip(req, s)
	if err != nil {
		return link{}, fmt.Errorf("RTM_GETLINK of lo: %w", err)
	}
	if data == nil {
		return link{}, errors.New("RTM_GETLINK of lo: acknowledged without the link")
	}
	l, err := parseLink(data)
	if err != nil {
		return link{}, fmt.Errorf("RTM_GETLINK of lo: %w", err)
	}
	if l.index != loIndex || l.flags&unix.IFF_LOOPBACK == 0 {
		return link{}, fmt.Errorf("RTM_GETLINK of index %d: got %q (index %d, flags %#x), not the loopback interface", loIndex, l.name, l.index, l.flags)
	}
	return l, nil
}

// ReadAlias returns the alias of lo in the calling thread's network namespace ("" when it has
// none). Any process may read it.
func ReadAlias() (string, error) {
	l, err := getLo()
	if err != nil {
		return "", err
	}
	return l.alias, nil
}

// Read reads and parses the record of the calling thread's network namespace (see Parse).
func Read() (Record, error) {
	s, err := ReadAlias()
	if err != nil {
		return Record{}, err
	}
	return Parse(s)
}

// WriteAlias sets lo's alias in the calling thread's network namespace ("" removes it). It needs
// CAP_NET_ADMIN over the namespace (EPERM otherwise); the kernel notifies RTNLGRP_LINK.
func WriteAlias(s string) error {
	if len(s) > MaxLen {
		return fmt.Errorf("alias of %d bytes: the kernel keeps at most %d", len(s), MaxLen)
	}
	req, seqNo := request(unix.RTM_NEWLINK, unix.NLM_F_ACK, attr(unix.IFLA_IFALIAS, []byte(s)))
	if _, err := roundTrip(req, seqNo); err != nil {
		return fmt.Errorf("set the alias of lo (RTM_NEWLINK IFLA_IFALIAS): %w", err)
	}
	return nil
}

// Write stores r as lo's alias in the calling thread's network namespace.
func Write(r Record) error {
	s, err := r.Format()
	if err != nil {
		return err
	}
	return WriteAlias(s)
}

// Clear removes the record (lo's alias) from the calling thread's network namespace.
func Clear() error { return WriteAlias("") }

// Watcher reports changes of lo in the network namespace it was created in (RTNLGRP_LINK
// notifications). Receiving them needs no privilege.
type Watcher struct {
	f   *os.File
	buf []byte
}

// NewWatcher subscribes to the link notifications of the calling thread's network namespace.
// Subscribe first, then Read: a change in between is not lost.
func NewWatcher() (*Watcher, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind to RTNLGRP_LINK: %w", err)
	}
	// A non-blocking fd handed to os.NewFile is served by the runtime's poller: Read parks the
	// goroutine and Close wakes it.
	return &Watcher{f: os.NewFile(uintptr(fd), "rtnetlink"), buf: make([]byte, recvBuf)}, nil
}

// Next blocks until lo may have changed: a notification about it, or lost notifications (the
// socket's buffer overflowed, ENOBUFS). It returns the error of a closed watcher.
func (w *Watcher) Next() error {
	for {
		n, err := w.f.Read(w.buf)
		if errors.Is(err, unix.ENOBUFS) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read link notifications: %w", err)
		}
		msgs, err := parseMessages(w.buf[:n])
		if err != nil {
			return nil // unreadable: re-read lo to be sure
		}
		for _, m := range msgs {
			if m.typ != unix.RTM_NEWLINK {
				continue
			}
			if l, err := parseLink(m.data); err != nil || l.index == loIndex {
				return nil
			}
		}
	}
}

// Close ends the subscription; a blocked Next returns.
func (w *Watcher) Close() error { return w.f.Close() }

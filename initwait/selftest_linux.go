package initwait

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The test is made of plain system calls on the calling thread: no network poller, no goroutine
// per listener. In the wait container's released run the test is most of the work, and each
// hand-off between goroutines wakes another thread; on a busy node every wake-up is a chance to
// wait for a CPU (docs/wait.md).

// pollSlice bounds each poll(2), so that a cancelled context ends the test within it.
const pollSlice = 50 * time.Millisecond

var errTimedOut = errors.New("timed out")

func (r *RedirectTest) test(ctx context.Context, f Family) error {
	network, listenIP, targetIP := "tcp4", r.ListenV4, r.TargetV4
	if f == IPv6 {
		network, listenIP, targetIP = "tcp6", r.ListenV6, r.TargetV6
	}
	deadline := time.Now().Add(r.Timeout)
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for _, port := range r.ProxyPorts {
		addr := netip.AddrPortFrom(listenIP, port)
		fd, err := listenTCP(addr)
		if fd >= 0 {
			fds = append(fds, fd)
		}
		if err != nil {
			return fmt.Errorf("listen %s %s: %w", network, addr, err)
		}
	}
	lns := fds[:len(fds):len(fds)]

	target := netip.AddrPortFrom(targetIP, r.TargetPort)
	conn, local, err := connectTCP(ctx, netip.AddrPortFrom(listenIP, 0), target, deadline)
	if conn >= 0 {
		fds = append(fds, conn)
	}
	if err != nil {
		if f == IPv6 && errors.Is(err, unix.ENETUNREACH) {
			return fmt.Errorf("connection to %s was not redirected: %w (the controller puts %s/128 on lo when it programs IPv6)", target, err, targetIP)
		}
		return fmt.Errorf("connection to %s was not redirected: %w", target, err)
	}

	accepted, err := acceptFrom(ctx, lns, local, deadline)
	if accepted >= 0 {
		fds = append(fds, accepted)
	}
	if err != nil {
		return fmt.Errorf("connected to %s, but none of the listeners on %s ports %v received the connection: "+
			"it was not redirected (%v)", target, listenIP, r.ProxyPorts, err)
	}
	dst, err := originalDst(accepted, f)
	if err != nil {
		return fmt.Errorf("connection to %s landed on %s but its original destination is unknown: %w", target, localAddr(accepted), err)
	}
	if dst.Port() != r.TargetPort {
		return fmt.Errorf("connection to %s landed on %s with original destination %s, want port %d", target, localAddr(accepted), dst, r.TargetPort)
	}
	return nil
}

// localAddr names a socket's local address, for messages.
func localAddr(fd int) string {
	if sa, err := unix.Getsockname(fd); err == nil {
		return sockaddrAddrPort(sa).String()
	}
	return "a listener"
}

// socketFor opens a non-blocking TCP socket of addr's family (IPv6 only for IPv6, as Go's tcp6).
func socketFor(addr netip.AddrPort) (int, error) {
	domain := unix.AF_INET
	if addr.Addr().Is6() {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if domain == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fd, os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
		}
	}
	return fd, nil
}

// listenTCP listens on addr with SO_REUSEADDR, as Go's net.ListenTCP does (a re-test finds the
// ports of the last one in TIME_WAIT). It returns the socket even on error, for the caller to close.
func listenTCP(addr netip.AddrPort) (int, error) {
	fd, err := socketFor(addr)
	if err != nil {
		return fd, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fd, os.NewSyscallError("setsockopt SO_REUSEADDR", err)
	}
	if err := unix.Bind(fd, sockaddr(addr)); err != nil {
		return fd, os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		return fd, os.NewSyscallError("listen", err)
	}
	return fd, nil
}

// connectTCP connects from local (port 0: any) to target before deadline; it returns the socket
// (even on error, for the caller to close) and its local address.
func connectTCP(ctx context.Context, local, target netip.AddrPort, deadline time.Time) (int, netip.AddrPort, error) {
	fd, err := socketFor(target)
	if err != nil {
		return fd, netip.AddrPort{}, err
	}
	if err := unix.Bind(fd, sockaddr(local)); err != nil {
		return fd, netip.AddrPort{}, os.NewSyscallError("bind", err)
	}
	if err := unix.Connect(fd, sockaddr(target)); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return fd, netip.AddrPort{}, os.NewSyscallError("connect", err)
	} else if err != nil {
		if err := pollUntil(ctx, []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, deadline); err != nil {
			return fd, netip.AddrPort{}, fmt.Errorf("connect: %w", err)
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return fd, netip.AddrPort{}, os.NewSyscallError("getsockopt SO_ERROR", err)
		}
		if soErr != 0 {
			return fd, netip.AddrPort{}, os.NewSyscallError("connect", unix.Errno(soErr))
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fd, netip.AddrPort{}, os.NewSyscallError("getsockname", err)
	}
	return fd, sockaddrAddrPort(sa), nil
}

// acceptFrom accepts, on any of lns until deadline, the connection whose remote address is from;
// connections from anyone else are closed. It returns the accepted socket.
func acceptFrom(ctx context.Context, lns []int, from netip.AddrPort, deadline time.Time) (int, error) {
	pfds := make([]unix.PollFd, len(lns))
	for i, fd := range lns {
		pfds[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	}
	for {
		if err := pollUntil(ctx, pfds, deadline); err != nil {
			return -1, fmt.Errorf("accept: %w", err)
		}
		for i := range pfds {
			if pfds[i].Revents == 0 {
				continue
			}
			for {
				fd, sa, err := unix.Accept4(int(pfds[i].Fd), unix.SOCK_CLOEXEC)
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
					break
				}
				if err != nil {
					return -1, os.NewSyscallError("accept", err)
				}
				if sockaddrAddrPort(sa) == from {
					return fd, nil
				}
				unix.Close(fd)
			}
		}
	}
}

// pollUntil waits until one of pfds has an event (set in its Revents), the deadline passes
// (errTimedOut) or ctx ends.
func pollUntil(ctx context.Context, pfds []unix.PollFd, deadline time.Time) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return errTimedOut
		}
		ms := int((min(left, pollSlice) + time.Millisecond - 1) / time.Millisecond)
		n, err := unix.Poll(pfds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("poll", err)
		}
		if n > 0 {
			return nil
		}
	}
}

func sockaddr(a netip.AddrPort) unix.Sockaddr {
	if a.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(a.Port()), Addr: a.Addr().As16()}
}

func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h), at level SOL_IPV6.
const ip6tSOOriginalDst = 80

// OriginalDst returns the destination an accepted connection was addressed to before a REDIRECT
// rewrote it (see originalDst), by the family of its local address.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	f := IPv4
	if local, err := netip.ParseAddrPort(c.LocalAddr().String()); err == nil && local.Addr().Unmap().Is6() {
		f = IPv6
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var dst netip.AddrPort
	var sockErr error
	if err := rc.Control(func(fd uintptr) { dst, sockErr = originalDst(int(fd), f) }); err != nil {
		return netip.AddrPort{}, err
	}
	return dst, sockErr
}

// originalDst is getsockopt SO_ORIGINAL_DST (SOL_IP, a sockaddr_in) or IP6T_SO_ORIGINAL_DST
// (SOL_IPV6, a sockaddr_in6) on an accepted socket. x/sys has no getter for these structs;
// IPv6Mreq (20 bytes) and IPv6MTUInfo (32 bytes) are large enough to receive them, as Istio's
// validator does. For a connection nothing rewrote it fails (ENOENT).
func originalDst(fd int, f Family) (netip.AddrPort, error) {
	if f == IPv6 {
		info, err := unix.GetsockoptIPv6MTUInfo(fd, unix.SOL_IPV6, ip6tSOOriginalDst)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("getsockopt IP6T_SO_ORIGINAL_DST: %w", err)
		}
		port := (*[2]byte)(unsafe.Pointer(&info.Addr.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr), binary.BigEndian.Uint16(port[:])), nil
	}
	mreq, err := unix.GetsockoptIPv6Mreq(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", err)
	}
	sa := mreq.Multiaddr[:] // sockaddr_in: family, port (big-endian), address
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), binary.BigEndian.Uint16(sa[2:4])), nil
}

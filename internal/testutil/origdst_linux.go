package testutil

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OriginalDst returns the destination an accepted connection was addressed to before a REDIRECT
// rewrote it: getsockopt SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6) on the socket. For
// a connection nothing rewrote it fails (ENOENT): then the local address is the destination.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	v6 := local.Addr().Unmap().Is6()
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var dst netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		if v6 {
			// IP6T_SO_ORIGINAL_DST (80) fills a sockaddr_in6; IPv6MTUInfo starts with one.
			var info *unix.IPv6MTUInfo
			if info, serr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, 80); serr == nil {
				port := (*[2]byte)(unsafe.Pointer(&info.Addr.Port))
				dst = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr), binary.BigEndian.Uint16(port[:]))
			}
			return
		}
		// SO_ORIGINAL_DST fills a sockaddr_in; IPv6Mreq (20 bytes) is large enough to receive it.
		var m *unix.IPv6Mreq
		if m, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST); serr == nil {
			sa := m.Multiaddr[:]
			dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), binary.BigEndian.Uint16(sa[2:4]))
		}
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %s: %w", c.LocalAddr(), serr)
	}
	return dst, nil
}

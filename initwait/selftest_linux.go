package initwait

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h), at level SOL_IPV6.
const ip6tSOOriginalDst = 80

// OriginalDst returns the destination an accepted connection was addressed to before a REDIRECT
// rewrote it: getsockopt SO_ORIGINAL_DST (SOL_IP, a sockaddr_in) or IP6T_SO_ORIGINAL_DST
// (SOL_IPV6, a sockaddr_in6) on the socket, by the family of its local address. x/sys has no
// getter for these structs; IPv6Mreq (20 bytes) and IPv6MTUInfo (32 bytes) are large enough to
// receive them, as Istio's validator does. For a connection nothing rewrote it fails (ENOENT).
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
	err = rc.Control(func(fd uintptr) {
		if f == IPv6 {
			var info *unix.IPv6MTUInfo
			info, sockErr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSOOriginalDst)
			if sockErr == nil {
				port := (*[2]byte)(unsafe.Pointer(&info.Addr.Port))
				dst = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr), binary.BigEndian.Uint16(port[:]))
			}
			return
		}
		var mreq *unix.IPv6Mreq
		mreq, sockErr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if sockErr == nil {
			sa := mreq.Multiaddr[:] // sockaddr_in: family, port (big-endian), address
			dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), binary.BigEndian.Uint16(sa[2:4]))
		}
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	if sockErr != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", sockErr)
	}
	return dst, nil
}

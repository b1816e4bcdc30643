//go:build !linux

package initwait

import (
	"errors"
	"net"
	"net/netip"
)

// originalDst needs Linux's SO_ORIGINAL_DST.
// OriginalDst is Linux only.
func OriginalDst(*net.TCPConn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("SO_ORIGINAL_DST is Linux-only")
}

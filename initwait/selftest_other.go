//go:build !linux

package initwait

import (
	"errors"
	"net"
	"net/netip"
)

// originalDst needs Linux's SO_ORIGINAL_DST.
func originalDst(*net.TCPConn, Family) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("SO_ORIGINAL_DST is Linux-only")
}

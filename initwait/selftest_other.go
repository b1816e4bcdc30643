//go:build !linux

package initwait

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

// The redirect rules and SO_ORIGINAL_DST are Linux's.
var errLinuxOnly = errors.New("the redirect self-test and SO_ORIGINAL_DST are Linux-only")

func (r *RedirectTest) test(context.Context, Family) error { return errLinuxOnly }

// OriginalDst is Linux only.
func OriginalDst(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPort{}, errLinuxOnly }

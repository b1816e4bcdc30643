package initwait

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// SelfTester proves, for one address family, that the redirect rules of the current network
// namespace work. RedirectTest is the real one; unit tests use fakes.
type SelfTester interface {
	Test(ctx context.Context, f Family) error
}

var _ SelfTester = (*RedirectTest)(nil)

// RedirectTest is Istio's unprivileged check that the sidecar redirect works (its istio-validation
// init container), run as the proxy's UID: listen where the proxy would (ProxyPorts on the loopback
// address), connect to Target:TargetPort, and pass only when one of the listeners accepts that very
// connection and its original destination (SO_ORIGINAL_DST) still has TargetPort. Istio's rule
//
//	-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner <proxy uid> -j ISTIO_IN_REDIRECT
//
// makes that work in every interception mode, but only for the proxy's UID (or GID).
type RedirectTest struct {
	// ListenV4 and ListenV6 are where the listeners bind, and the client's source address (as in
	// Istio: from ::6, the kernel's own choice for ::6, the rules would let it pass): 127.0.0.1, ::1.
	ListenV4, ListenV6 netip.Addr
	// ProxyPorts are the proxy's outbound and inbound capture ports: 15001 and 15006.
	ProxyPorts []uint16
	// TargetV4 and TargetV6 are connected to: 127.0.0.6 and ::6, on lo but not the loopback address
	// itself, so the rules redirect the connection.
	TargetV4, TargetV6 netip.Addr
	// TargetPort is the port connected to, where nothing listens: 15002.
	TargetPort uint16
	// Timeout bounds the connect and the accept.
	Timeout time.Duration
}

// IstioRedirectTest returns the test with Istio's addresses and ports.
func IstioRedirectTest() *RedirectTest {
	return &RedirectTest{
		ListenV4:   netip.MustParseAddr("127.0.0.1"),
		ListenV6:   netip.IPv6Loopback(),
		ProxyPorts: []uint16{15001, 15006},
		TargetV4:   netip.MustParseAddr("127.0.0.6"),
		TargetV6:   netip.MustParseAddr("::6"),
		TargetPort: 15002,
		Timeout:    time.Second,
	}
}

// Test runs the check for family f. Its error says what failed and that the check only works as
// the UID the rules exempt, naming the current UID.
func (r *RedirectTest) Test(ctx context.Context, f Family) error {
	err := r.test(ctx, f)
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s redirect self-test failed: %w. This test only works when the wait container runs as the UID "+
		"the rules exempt (istio-proxy's runAsUser; 0 or unset means 1337); this process runs as UID %d, GID %d",
		f, err, os.Getuid(), os.Getgid())
}

func (r *RedirectTest) test(ctx context.Context, f Family) error {
	network, listenIP, targetIP := "tcp4", r.ListenV4, r.TargetV4
	if f == IPv6 {
		network, listenIP, targetIP = "tcp6", r.ListenV6, r.TargetV6
	}
	var lns []*net.TCPListener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, port := range r.ProxyPorts {
		ln, err := net.ListenTCP(network, net.TCPAddrFromAddrPort(netip.AddrPortFrom(listenIP, port)))
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}

	target := netip.AddrPortFrom(targetIP, r.TargetPort)
	d := net.Dialer{Timeout: r.Timeout, LocalAddr: &net.TCPAddr{IP: listenIP.AsSlice()}}
	conn, err := d.DialContext(ctx, network, target.String())
	if err != nil {
		if f == IPv6 && errors.Is(err, syscall.ENETUNREACH) {
			return fmt.Errorf("connection to %s was not redirected: %w (the controller puts %s/128 on lo when it programs IPv6)", target, err, targetIP)
		}
		return fmt.Errorf("connection to %s was not redirected: %w", target, err)
	}
	defer conn.Close()

	accepted, err := acceptFrom(lns, conn.LocalAddr(), time.Now().Add(r.Timeout))
	if err != nil {
		return fmt.Errorf("connected to %s, but none of the listeners on %s ports %v received the connection: "+
			"it was not redirected (%v)", target, listenIP, r.ProxyPorts, err)
	}
	defer accepted.Close()
	dst, err := OriginalDst(accepted)
	if err != nil {
		return fmt.Errorf("connection to %s landed on %s but its original destination is unknown: %w", target, accepted.LocalAddr(), err)
	}
	if dst.Port() != r.TargetPort {
		return fmt.Errorf("connection to %s landed on %s with original destination %s, want port %d", target, accepted.LocalAddr(), dst, r.TargetPort)
	}
	return nil
}

// acceptFrom accepts, on any of lns until deadline, the connection whose remote address is from;
// connections from anyone else are closed.
func acceptFrom(lns []*net.TCPListener, from net.Addr, deadline time.Time) (*net.TCPConn, error) {
	type result struct {
		conn *net.TCPConn
		err  error
	}
	results := make(chan result, len(lns))
	for _, ln := range lns {
		if err := ln.SetDeadline(deadline); err != nil {
			return nil, err
		}
		go func() {
			for {
				c, err := ln.AcceptTCP()
				if err != nil {
					results <- result{err: err}
					return
				}
				if c.RemoteAddr().String() == from.String() {
					results <- result{conn: c}
					return
				}
				c.Close()
			}
		}()
	}
	var got *net.TCPConn
	var lastErr error
	for range lns {
		r := <-results
		switch {
		case r.conn == nil:
			lastErr = r.err
		case got == nil:
			got = r.conn
			for _, ln := range lns { // stop the other accepts
				ln.Close()
			}
		default:
			r.conn.Close()
		}
	}
	if got == nil {
		return nil, lastErr
	}
	return got, nil
}

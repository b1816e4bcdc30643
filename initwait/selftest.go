package initwait

import (
	"context"
	"fmt"
	"net/netip"
	"os"
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

package e2e_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/initwait"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/kubelet"
)

// serveIn listens on port on every address of the family ("tcp4" or "tcp6") inside h, as a
// stand-in for Envoy, and answers each connection with "<port> <original destination>" (the local
// address when nothing redirected it).
func serveIn(t *testing.T, h *netns.Handle, network string, port int) {
	t.Helper()
	var l net.Listener
	err := h.Do(func() error {
		var err error
		host := "0.0.0.0"
		if network == "tcp6" {
			host = "::"
		}
		l, err = net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s port %d in %s: %v", network, port, h.Path(), err)
	}
	t.Cleanup(func() { l.Close() })
	go answer(l, strconv.Itoa(port))
}

// serveHost listens on addr in the host namespace and answers "host <local address>".
func serveHost(t *testing.T, network, addr string) string {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go answer(l, "host")
	return l.Addr().String()
}

func answer(l net.Listener, name string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		dst := c.LocalAddr().String()
		if orig, err := initwait.OriginalDst(c.(*net.TCPConn)); err == nil {
			dst = orig.String()
		}
		fmt.Fprintf(c, "%s %s\n", name, dst)
		c.Close()
	}
}

// dialHost connects from the host namespace and returns the first line the server sends.
func dialHost(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 256)
	n, _ := c.Read(buf)
	return strings.TrimSpace(string(buf[:n]))
}

// dialIn connects from inside h as uid (user and group) with the probe binary and returns the
// first line the server sends, or "error: ...".
func (e *environment) dialIn(t *testing.T, h *netns.Handle, uid uint32, addr string) string {
	t.Helper()
	var out []byte
	err := h.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, e.probe, addr)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		var err error
		out, err = cmd.Output()
		if _, ok := err.(*exec.ExitError); ok {
			return nil // the probe printed the error
		}
		return err
	})
	if err != nil {
		t.Fatalf("run the probe in %s as UID %d: %v", h.Path(), uid, err)
	}
	return strings.TrimSpace(string(out))
}

// checkTraffic proves the redirect of a released pod with real TCP for one family: inbound from
// the node to the pod's port 8080 lands on 15006 with the original destination; outbound from the
// application's UID lands on 15001 with the original destination; the proxy's own outbound traffic
// (proxyUID) reaches its destination untouched.
func (e *environment) checkTraffic(t *testing.T, h *netns.Handle, podIP netip.Addr, proxyUID uint32) {
	t.Helper()
	e.checkTrafficVia(t, h, podIP, proxyUID, serveIn)
}

// checkTrafficVia is checkTraffic with serveInbound as the listener on 15006 (TPROXY delivers only
// to a transparent one).
func (e *environment) checkTrafficVia(t *testing.T, h *netns.Handle, podIP netip.Addr, proxyUID uint32,
	serveInbound func(*testing.T, *netns.Handle, string, int)) {
	t.Helper()
	network, gw := "tcp4", e.gateway4()
	if podIP.Is6() {
		network, gw = "tcp6", e.gateway6()
	}
	serveInbound(t, h, network, 15006)
	serveIn(t, h, network, 15001)
	hostAddr := serveHost(t, network, net.JoinHostPort(gw.String(), "0"))

	inbound := netip.AddrPortFrom(podIP, 8080).String()
	if got, want := dialHost(inbound), "15006 "+inbound; got != want {
		t.Errorf("inbound %s from the node: got %q, want %q (redirected to 15006)", inbound, got, want)
	}
	if got, want := e.dialIn(t, h, 1000, hostAddr), "15001 "+hostAddr; got != want {
		t.Errorf("outbound to %s as the application (UID 1000): got %q, want %q (redirected to 15001)", hostAddr, got, want)
	}
	if got, want := e.dialIn(t, h, proxyUID, hostAddr), "host "+hostAddr; got != want {
		t.Errorf("outbound to %s as the proxy (UID %d): got %q, want %q (not redirected)", hostAddr, proxyUID, got, want)
	}
}

func (e *environment) gateway4() netip.Addr {
	return netip.MustParsePrefix(kubelet.DefaultPodCIDRv4).Addr()
}

func (e *environment) gateway6() netip.Addr {
	return netip.MustParsePrefix(kubelet.DefaultPodCIDRv6).Addr()
}

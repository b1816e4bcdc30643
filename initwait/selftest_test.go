//go:build linux

package initwait

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// freePorts returns n TCP ports free on 127.0.0.1 right now.
func freePorts(t *testing.T, n int) []uint16 {
	t.Helper()
	var ports []uint16
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, uint16(ln.Addr().(*net.TCPAddr).Port))
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// hostTest is Istio's test on free ports, usable unprivileged in the host namespace, where no rule
// redirects anything.
func hostTest(t *testing.T) *RedirectTest {
	p := freePorts(t, 3)
	r := IstioRedirectTest()
	r.ProxyPorts, r.TargetPort = p[:2], p[2]
	r.Timeout = 200 * time.Millisecond
	return r
}

func checkSelfTestError(t *testing.T, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("self-test passed without any redirect rule")
	}
	wants = append(wants, "ipv4 redirect self-test failed", "only works when the wait container runs as the UID the rules exempt",
		"istio-proxy's runAsUser; 0 or unset means 1337", fmt.Sprintf("this process runs as UID %d", os.Getuid()))
	for _, want := range wants {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestRedirectTestFailsWithoutRules(t *testing.T) {
	r := hostTest(t)
	err := r.Test(context.Background(), IPv4)
	checkSelfTestError(t, err, fmt.Sprintf("connection to 127.0.0.6:%d was not redirected", r.TargetPort), "connection refused")
}

func TestRedirectTestFailsWhenTargetAnswersItself(t *testing.T) {
	r := hostTest(t)
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.6:%d", r.TargetPort))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = r.Test(context.Background(), IPv4)
	checkSelfTestError(t, err, "none of the listeners on 127.0.0.1 ports", "it was not redirected")
}

func TestRedirectTestFailsWhenPortTaken(t *testing.T) {
	r := hostTest(t)
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", r.ProxyPorts[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = r.Test(context.Background(), IPv4)
	checkSelfTestError(t, err, fmt.Sprintf("127.0.0.1:%d", r.ProxyPorts[1]), "address already in use")
}

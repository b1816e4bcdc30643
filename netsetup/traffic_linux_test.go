package netsetup

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/initwait"
	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// The test binary doubles as the stand-in proxy, app and client, started as other UIDs inside
// namespaces: PNC_HELPER=listen (PNC_PORTS, PNC_TRANSPARENT) or dial (PNC_ADDR).
func helperMain() bool {
	switch os.Getenv("PNC_HELPER") {
	case "listen":
		listenHelper(strings.Split(os.Getenv("PNC_PORTS"), ","), os.Getenv("PNC_TRANSPARENT") != "")
		return true
	case "dial":
		line, err := dial(os.Getenv("PNC_ADDR"))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(line)
		return true
	}
	return false
}

// listenHelper accepts on every port (IPv4 and IPv6) and answers each connection with
// "<listening port> <original destination>": SO_ORIGINAL_DST after REDIRECT, the local address
// after TPROXY (transparent listeners) or when nothing was rewritten.
func listenHelper(ports []string, transparent bool) {
	for _, p := range ports {
		for _, network := range []string{"tcp4", "tcp6"} {
			lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
				var serr error
				_ = c.Control(func(fd uintptr) {
					if transparent {
						if network == "tcp4" {
							serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
						} else {
							serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
						}
					}
				})
				return serr
			}}
			host := "0.0.0.0"
			if network == "tcp6" {
				host = "::"
			}
			l, err := lc.Listen(context.Background(), network, net.JoinHostPort(host, p))
			if err != nil {
				fmt.Println("listen error:", err)
				os.Exit(1)
			}
			go serve(l, p)
		}
	}
	fmt.Println("ready")
	select {}
}

func serve(l net.Listener, port string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		orig := c.LocalAddr().String() // TPROXY, or nothing rewritten
		if dst, err := initwait.OriginalDst(c.(*net.TCPConn)); err == nil {
			orig = dst.String()
		}
		fmt.Fprintf(c, "%s %s\n", port, orig)
		c.Close()
	}
}

func dial(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// startIn starts the test binary as a helper inside h as uid (0: root), and waits until it listens.
func startIn(t *testing.T, h *netns.Handle, uid uint32, caps []uintptr, env ...string) {
	t.Helper()
	var cmd *exec.Cmd
	var stdout *bufio.Reader
	err := h.Do(func() error {
		cmd = exec.Command(helperBinary, "-test.run=^$")
		cmd.Env = append(os.Environ(), env...)
		// No Pdeathsig: it fires when the starting OS thread exits, which the runtime may do at any time.
		cmd.SysProcAttr = &syscall.SysProcAttr{AmbientCaps: caps}
		if uid != 0 {
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: uid}
		}
		pipe, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		stdout = bufio.NewReader(pipe)
		return cmd.Start()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, _ := stdout.ReadString('\n'); strings.TrimSpace(line) != "ready" {
		t.Fatalf("helper did not start: %q", line)
	}
}

// dialFrom connects from inside h, as root in-process (uid 0) or as uid through a helper process.
func dialFrom(t *testing.T, h *netns.Handle, uid uint32, addr string) string {
	t.Helper()
	var line string
	err := h.Do(func() error {
		if uid == 0 {
			var err error
			line, err = dial(addr)
			return err
		}
		cmd := exec.Command(helperBinary, "-test.run=^$")
		cmd.Env = append(os.Environ(), "PNC_HELPER=dial", "PNC_ADDR="+addr)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.Output()
		line = strings.TrimSpace(string(out))
		return err
	})
	if err != nil {
		return "error: " + err.Error() + " " + line
	}
	return line
}

// TestTraffic proves the rules with real TCP connections between a pod namespace and a peer
// namespace joined by a veth, for REDIRECT and TPROXY, IPv4 and IPv6: inbound lands on 15006 with
// the original port, outbound from the app lands on 15001 with the original destination, excluded
// inbound port / outbound CIDR / outbound port and the proxy UID's own traffic are left alone.
func TestTraffic(t *testing.T) {
	for _, mode := range []rules.Mode{rules.ModeRedirect, rules.ModeTProxy} {
		for _, v6 := range []bool{false, true} {
			name := string(mode) + "/ipv4"
			if v6 {
				name = string(mode) + "/ipv6"
			}
			t.Run(name, func(t *testing.T) { testTraffic(t, mode, v6) })
		}
	}
}

func testTraffic(t *testing.T, mode rules.Mode, v6 bool) {
	a := newApplier(t, BackendNFT)
	pod, peer := testutil.NewNetns(t), testutil.NewNetns(t)
	// Distinct subnets per test: the namespaces are separate, so fixed ones would do too.
	podIP, peerIP, outside, plen := "10.77.0.2", "10.77.0.1", "192.0.2.10", "/24"
	if v6 {
		podIP, peerIP, outside, plen = "fd00:77::2", "fd00:77::1", "2001:db8::10", "/64"
	}
	testutil.Link(t, pod, []string{podIP + plen}, peer, "eth0", []string{peerIP + plen})
	pod.Run(t, "ip", "route", "add", "default", "via", peerIP)
	ph, qh := openNS(t, pod), openNS(t, peer)

	cfg := rules.Default()
	cfg.InterceptionMode = mode
	cfg.EnableIPv6 = v6
	cfg.InboundPortsExclude = append(cfg.InboundPortsExclude, 8081)
	cfg.OutboundPortsExclude = append(cfg.OutboundPortsExclude, 9091)
	if _, err := a.Apply(context.Background(), ph, "traffic", cfg); err != nil {
		t.Fatal(err)
	}

	var caps []uintptr
	env := []string{"PNC_HELPER=listen", "PNC_PORTS=15001,15006,8080,8081"}
	if mode == rules.ModeTProxy {
		caps = []uintptr{unix.CAP_NET_ADMIN} // Envoy needs it for transparent sockets
		env = append(env, "PNC_TRANSPARENT=1")
	}
	startIn(t, ph, 1337, caps, env...)
	startIn(t, qh, 0, nil, "PNC_HELPER=listen", "PNC_PORTS=9090,9091")

	hp := func(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
	cases := []struct {
		name string
		from *netns.Handle
		uid  uint32
		addr string
		want string
	}{
		{"inbound to app port lands on 15006", qh, 0, hp(podIP, 8080), "15006 " + hp(podIP, 8080)},
		{"excluded inbound port reaches the app", qh, 0, hp(podIP, 8081), "8081 " + hp(podIP, 8081)},
		{"outbound from the app lands on 15001", ph, 0, hp(outside, 80), "15001 " + hp(outside, 80)},
		{"outbound from a non-proxy UID lands on 15001", ph, 1000, hp(peerIP, 9090), "15001 " + hp(peerIP, 9090)},
		{"excluded outbound port is not redirected", ph, 0, hp(peerIP, 9091), "9091 " + hp(peerIP, 9091)},
		{"the proxy UID's own traffic is not redirected", ph, 1337, hp(peerIP, 9090), "9090 " + hp(peerIP, 9090)},
	}
	for _, c := range cases {
		if got := dialFrom(t, c.from, c.uid, c.addr); got != c.want {
			t.Errorf("%s: connect %s as uid %d: got %q, want %q", c.name, c.addr, c.uid, got, c.want)
		}
	}

	// An excluded outbound CIDR: re-apply with the peer's subnet excluded; the app reaches the peer.
	prefix := netip.MustParsePrefix(peerIP + plen).Masked()
	cfg.OutboundIPRangesExclude = []netip.Prefix{prefix}
	if _, err := a.Apply(context.Background(), ph, "traffic", cfg); err != nil {
		t.Fatal(err)
	}
	if got, want := dialFrom(t, ph, 0, hp(peerIP, 9090)), "9090 "+hp(peerIP, 9090); got != want {
		t.Errorf("excluded outbound CIDR %s: got %q, want %q", prefix, got, want)
	}
}

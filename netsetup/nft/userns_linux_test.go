package nft

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// TestUserNamespacePod programs a namespace owned by a pod user namespace (hostUsers: false, pod
// UID 0 = host UID 100000) directly from the host, with no nsenter: nftables resolves skuid in
// the namespace's user namespace, so the validator's loopback connection as the pod's UID 1337
// (host UID 101337) lands on 15006 with its original destination. Negative control: the same
// connection as host UID 1337 (not the pod's 1337) is not redirected.
func TestUserNamespacePod(t *testing.T) {
	const base = 100000
	path := testutil.UserNetns(t, base)
	h, err := netns.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	a, ctx := NewApplier(), context.Background()
	cfg := rules.Default()
	if res, err := a.Apply(ctx, h, "userns", cfg); err != nil || !res.Changed {
		t.Fatalf("apply: %+v %v", res, err)
	}
	if res, err := a.Apply(ctx, h, "userns", cfg); err != nil || res.Changed {
		t.Fatalf("re-apply: %+v %v", res, err)
	}
	var ln net.Listener
	if err := h.Do(func() (err error) { ln, err = net.Listen("tcp4", "127.0.0.1:15006"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := dialAs(t, h, ln, base+1337); got != "127.0.0.6:15002" {
		t.Fatalf("as the pod's proxy UID: %s, want redirected to 15006 with original destination 127.0.0.6:15002", got)
	}
	if got := dialAs(t, h, ln, 1337); got != "refused" {
		t.Fatalf("as host UID 1337 (negative control): %s, want not redirected (connection refused)", got)
	}
}

// dialAs connects to 127.0.0.6:15002 inside h from a socket whose owner is host UID uid (the
// locked thread's effective UID, restored afterwards), and reports the original destination the
// listener ln saw, or "refused".
func dialAs(t *testing.T, h *netns.Handle, ln net.Listener, uid int) string {
	t.Helper()
	var connErr error
	err := h.Do(func() error {
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			return fmt.Errorf("seteuid %d: %w", uid, e)
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			connErr = unix.Connect(fd, &unix.SockaddrInet4{Port: 15002, Addr: [4]byte{127, 0, 0, 6}})
			defer unix.Close(fd)
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
			panic("cannot restore the thread's effective UID: " + e.Error())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if connErr != nil {
		return "refused"
	}
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept on 15006: %v", err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var dst string
	_ = raw.Control(func(fd uintptr) {
		m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			dst = "SO_ORIGINAL_DST: " + err.Error()
			return
		}
		dst = fmt.Sprintf("%d.%d.%d.%d:%d", m.Multiaddr[4], m.Multiaddr[5], m.Multiaddr[6], m.Multiaddr[7],
			binary.BigEndian.Uint16(m.Multiaddr[2:4]))
	})
	return dst
}

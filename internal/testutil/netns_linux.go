package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"
)

// Netns is a throwaway named network namespace (/run/netns/<Name>) with lo up, deleted when the
// test ends.
type Netns struct {
	Name string
	Path string
}

// NewNetns creates a named network namespace for the test.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	RequireRoot(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	n := &Netns{Name: "pnc-t-" + hex.EncodeToString(b)}
	n.Path = "/run/netns/" + n.Name
	Run(t, "ip", "netns", "add", n.Name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.Name).Run() })
	n.Run(t, "ip", "link", "set", "lo", "up")
	return n
}

// Run runs a command inside the namespace and returns its output; it fails the test on error.
func (n *Netns) Run(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

// Link joins a and b with a veth pair (a's end eth0 in a, b's end named bName in b) and assigns
// the given addresses (CIDR notation) to each end; both ends are up.
func Link(t testing.TB, a *Netns, aAddrs []string, b *Netns, bName string, bAddrs []string) {
	t.Helper()
	tmp := "pv" + a.Name[len(a.Name)-8:]
	Run(t, "ip", "link", "add", tmp, "type", "veth", "peer", "name", tmp+"b")
	Run(t, "ip", "link", "set", tmp, "netns", a.Name, "name", "eth0")
	Run(t, "ip", "link", "set", tmp+"b", "netns", b.Name, "name", bName)
	for _, addr := range aAddrs {
		a.Run(t, addrAdd(addr, "eth0")...)
	}
	for _, addr := range bAddrs {
		b.Run(t, addrAdd(addr, bName)...)
	}
	a.Run(t, "ip", "link", "set", "eth0", "up")
	b.Run(t, "ip", "link", "set", bName, "up")
}

// addrAdd is "ip addr add": IPv6 addresses skip duplicate address detection so they work at once.
func addrAdd(addr, dev string) []string {
	args := []string{"ip", "addr", "add", addr, "dev", dev}
	if strings.Contains(addr, ":") {
		args = append(args, "nodad")
	}
	return args
}

// Run runs a command and returns its combined output; it fails the test on error.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

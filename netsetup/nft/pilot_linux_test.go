package nft

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// pilotAgent returns Istio's pilot-agent (test/tools/build.sh pilot-agent), or skips.
func pilotAgent(t testing.TB) string {
	t.Helper()
	requireNft(t)
	agent := os.Getenv("PILOT_AGENT")
	if agent == "" {
		home, _ := os.UserHomeDir()
		agent = filepath.Join(home, ".cache", "istio-pod-network-controller", "tools", "pilot-agent")
	}
	if _, err := os.Stat(agent); err != nil {
		t.Skipf("pilot-agent not built (test/tools/build.sh pilot-agent): %v", err)
	}
	return agent
}

// withPodIP gives n an eth0 with the pod IP 10.1.0.2 (and fd00::2): istio-iptables needs one.
func withPodIP(t testing.TB, n *testutil.Netns, ipv6 bool) {
	t.Helper()
	n.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	n.Run(t, "ip", "addr", "add", "10.1.0.2/24", "dev", "eth0")
	if ipv6 {
		n.Run(t, "ip", "addr", "add", "fd00::2/64", "dev", "eth0", "nodad")
	}
	n.Run(t, "ip", "link", "set", "eth0", "up")
}

// TestTwinIstioNative programs pods with Istio's own `pilot-agent istio-iptables
// --native-nftables` in one namespace and with our applier in a twin: the tables read back over
// netlink and `nft list table` must be identical, and our Verify (tables and routes) must accept
// the namespace Istio programmed.
func TestTwinIstioNative(t *testing.T) {
	agent := pilotAgent(t)
	base := []string{"istio-iptables", "--native-nftables", "-p", "15001", "-z", "15006", "-u", "1337", "-g", "1337",
		"-t", "1337", "-r", "133", "--log_output_level", "default:error"}
	dns := func(c *rules.Config) { c.RedirectDNS, c.DNSServersV4 = true, []string{"10.96.0.10"} }
	cases := []struct {
		name  string
		args  []string
		ipv6  bool
		setup func(c *rules.Config)
	}{
		{"redirect", []string{"-m", "REDIRECT", "-i", "*", "-b", "*", "-d", "15020,15021,15090", "-o", "15020"}, false, nil},
		{"tproxy-dual", []string{"-m", "TPROXY", "-i", "*", "-b", "*", "-d", "15020,15021,15090", "-o", "15020", "--dual-stack"}, true,
			func(c *rules.Config) { c.InterceptionMode = rules.ModeTProxy }},
		{"dns-resolv-conf", []string{"-m", "REDIRECT", "-i", "*", "-b", "*", "-d", "15020,15021,15090", "-o", "15020", "--redirect-dns"}, false, dns},
		{"capture-all-dns-drop-invalid", []string{"-m", "REDIRECT", "-i", "*", "-b", "*", "-d", "15020,15021,15090", "-o", "15020",
			"--redirect-dns", "--capture-all-dns", "--drop-invalid"}, false,
			func(c *rules.Config) { c.RedirectDNS, c.CaptureAllDNS, c.DropInvalid = true, true, true }},
		{"exclusions", []string{"-m", "REDIRECT", "-i", "10.96.0.0/12,10.0.0.0/8", "-x", "10.1.0.0/16", "-b", "8080,9090",
			"-d", "15020,15021,15090", "-o", "15020,3306", "-q", "5432", "-c", "eth9", "-k", "eth5"}, false,
			func(c *rules.Config) {
				c.OutboundIPRangesInclude = rules.Ranges{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("10.0.0.0/8")}}
				c.OutboundIPRangesExclude = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
				c.InboundPortsInclude = rules.Ports{Ports: []uint16{8080, 9090}}
				c.OutboundPortsExclude, c.OutboundPortsInclude = []uint16{15020, 3306}, []uint16{5432}
				c.ExcludeInterfaces, c.RerouteVirtualInterfaces = []string{"eth9"}, []string{"eth5"}
			}},
	}
	a, ctx := NewApplier(), context.Background()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := rules.Default()
			cfg.EnableIPv6 = c.ipv6
			if c.setup != nil {
				c.setup(cfg)
			}
			istio, ours := testutil.NewNetns(t), testutil.NewNetns(t)
			withPodIP(t, istio, c.ipv6)
			etc := filepath.Join("/etc/netns", istio.Name) // ip netns exec mounts it over /etc
			if err := os.MkdirAll(etc, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(etc) })
			if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver 10.96.0.10\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"netns", "exec", istio.Name, agent}, append(base, c.args...)...)
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("pilot-agent: %v\n%s", err, out)
			}
			ho := openNS(t, ours)
			if _, err := a.Apply(ctx, ho, "twin", cfg); err != nil {
				t.Fatal(err)
			}
			hi := openNS(t, istio)
			if ok, diff := liveState(t, hi).Equal(liveState(t, ho)); !ok {
				t.Fatalf("netlink read-back differs from Istio's pilot-agent: %s", diff)
			}
			if li, lo := listTables(t, istio), listTables(t, ours); li != lo {
				t.Fatalf("nft list table differs:\nIstio's:\n%s\nours:\n%s", li, lo)
			}
			if _, err := a.Verify(ctx, hi, "twin", cfg); err != nil {
				t.Fatalf("our Verify refuses the namespace Istio programmed: %v", err)
			}
		})
	}
}

package nft

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// pilotAgent returns Istio's pilot-agent (test/tools/build.sh pilot-agent, part of `make tools`);
// without it the test skips on a laptop and fails under CI, which must compare with Istio for real.
func pilotAgent(t testing.TB) string {
	t.Helper()
	requireNft(t)
	agent := os.Getenv("PILOT_AGENT")
	if agent == "" {
		home, _ := os.UserHomeDir()
		agent = filepath.Join(home, ".cache", "istio-pod-network-controller", "tools", "pilot-agent")
	}
	if _, err := os.Stat(agent); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("pilot-agent not built and CI=%q is set (make tools builds it): %v", os.Getenv("CI"), err)
		}
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

// TestTwinIstioNative: pod configurations as the sidecar CNI mapping makes them (rules.Default
// and a few annotations) through Istio's own pilot-agent and through us (twinWithAgent).
func TestTwinIstioNative(t *testing.T) {
	agent := pilotAgent(t)
	cases := map[string]func(c *rules.Config){
		"redirect":    func(c *rules.Config) {},
		"tproxy-dual": func(c *rules.Config) { c.InterceptionMode, c.EnableIPv6 = rules.ModeTProxy, true },
		"dns-resolv-conf": func(c *rules.Config) {
			c.RedirectDNS, c.DNSServersV4, c.DNSServersV6, c.EnableIPv6 = true, []string{"10.96.0.10"}, []string{"fd00::10"}, true
		},
		"capture-all-dns-drop-invalid": func(c *rules.Config) { c.RedirectDNS, c.CaptureAllDNS, c.DropInvalid = true, true, true },
		"exclusions": func(c *rules.Config) {
			c.OutboundIPRangesInclude = rules.Ranges{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("10.0.0.0/8")}}
			c.OutboundIPRangesExclude = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
			c.InboundPortsInclude = rules.Ports{Ports: []uint16{8080, 9090}}
			c.OutboundPortsExclude, c.OutboundPortsInclude = []uint16{15020, 3306}, []uint16{5432}
			c.ExcludeInterfaces, c.RerouteVirtualInterfaces = []string{"eth9"}, []string{"eth5"}
		},
	}
	a := NewApplier()
	for name, set := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := rules.Default()
			set(cfg)
			twinWithAgent(t, agent, a, cfg)
		})
	}
}

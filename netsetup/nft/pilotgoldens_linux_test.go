package nft

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

func joinPorts(all bool, ports []uint16) string {
	if all {
		return "*"
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}

func joinPrefixes(all bool, prefixes []netip.Prefix) string {
	if all {
		return "*"
	}
	s := make([]string, len(prefixes))
	for i, p := range prefixes {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func joinIDs(ids []uint32) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ",")
}

// agentInvocation is how istio-init would be told cfg: pilot-agent istio-iptables flags, the
// environment it reads the owner groups and the loopback CIDR from, and the resolv.conf it reads
// the DNS servers from (IPv6 comes from the pod's addresses).
func agentInvocation(cfg *rules.Config) (args, env []string, resolv string) {
	args = []string{"istio-iptables", "--native-nftables", "--log_output_level", "default:error",
		"-p", fmt.Sprint(cfg.ProxyPort), "-z", fmt.Sprint(cfg.InboundCapturePort), "-e", fmt.Sprint(cfg.InboundTunnelPort),
		"-u", joinIDs(cfg.ProxyUIDs), "-g", joinIDs(cfg.ProxyGIDs), "-m", string(cfg.InterceptionMode),
		"-t", fmt.Sprint(cfg.TProxyMark), "-r", fmt.Sprint(cfg.TProxyRouteTable),
		"-b", joinPorts(cfg.InboundPortsInclude.All, cfg.InboundPortsInclude.Ports), "-d", joinPorts(false, cfg.InboundPortsExclude),
		"-q", joinPorts(false, cfg.OutboundPortsInclude), "-o", joinPorts(false, cfg.OutboundPortsExclude),
		"-i", joinPrefixes(cfg.OutboundIPRangesInclude.All, cfg.OutboundIPRangesInclude.Prefixes),
		"-x", joinPrefixes(false, cfg.OutboundIPRangesExclude),
		"-c", strings.Join(cfg.ExcludeInterfaces, ","), "-k", strings.Join(cfg.RerouteVirtualInterfaces, ",")}
	for flag, on := range map[string]bool{"--redirect-dns": cfg.RedirectDNS, "--capture-all-dns": cfg.CaptureAllDNS,
		"--drop-invalid": cfg.DropInvalid, "--dual-stack": cfg.EnableIPv6} {
		if on {
			args = append(args, flag)
		}
	}
	include, exclude := "*", strings.Join(cfg.OwnerGroups.Groups, ",")
	if !cfg.OwnerGroups.Except {
		include, exclude = exclude, ""
	}
	env = []string{"ISTIO_OUTBOUND_OWNER_GROUPS=" + include, "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE=" + exclude,
		"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR=" + cfg.HostIPv4LoopbackCIDR.String()}
	for _, s := range append(append([]string(nil), cfg.DNSServersV4...), cfg.DNSServersV6...) {
		resolv += "nameserver " + s + "\n"
	}
	return args, env, resolv
}

// TestTwinIstioNativeGoldens: every golden case's configuration given to Istio's own pilot-agent
// istio-iptables --native-nftables in one namespace and to our applier in a twin.
func TestTwinIstioNativeGoldens(t *testing.T) {
	agent := pilotAgent(t)
	a := NewApplier()
	for _, c := range loadCases(t) {
		t.Run(c.Name, func(t *testing.T) { twinWithAgent(t, agent, a, numeric(c.Config)) })
	}
}

// twinWithAgent programs cfg with pilot-agent in one namespace and with a in a twin: the tables
// read back and `nft list table` must be identical, and our Verify (tables and routes) must accept
// the namespace Istio programmed.
func twinWithAgent(t *testing.T, agent string, a *Applier, cfg *rules.Config) {
	ctx := context.Background()
	args, env, resolv := agentInvocation(cfg)
	istio, ours := testutil.NewNetns(t), testutil.NewNetns(t)
	withPodIP(t, istio, cfg.EnableIPv6)
	etc := filepath.Join("/etc/netns", istio.Name) // ip netns exec mounts it over /etc
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte(resolv), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", istio.Name, agent}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pilot-agent %s: %v\n%s", strings.Join(args, " "), err, out)
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
}

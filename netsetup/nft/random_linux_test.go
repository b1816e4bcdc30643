package nft

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// randomConfig draws a pod configuration from the space the annotations and istio-proxy's
// settings span: mode, port lists (with the wildcard), CIDRs of any prefix length in both
// families, interfaces, UID/GID lists, DNS capture with servers of both families, IPv6.
func randomConfig(r *rand.Rand) *rules.Config {
	c := rules.Default()
	c.InterceptionMode = []rules.Mode{rules.ModeRedirect, rules.ModeTProxy}[r.IntN(2)]
	c.EnableIPv6 = r.IntN(2) == 0
	ports := func(max int) []uint16 {
		var p []uint16
		for i := r.IntN(max + 1); i > 0; i-- {
			p = append(p, uint16(1+r.IntN(65535)))
		}
		return p
	}
	prefixes := func(max int) []netip.Prefix {
		var p []netip.Prefix
		for i := r.IntN(max + 1); i > 0; i-- {
			if r.IntN(2) == 0 {
				a := netip.AddrFrom4([4]byte{byte(1 + r.IntN(223)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
				p = append(p, netip.PrefixFrom(a, r.IntN(33)).Masked())
			} else {
				var b [16]byte
				b[0], b[1], b[2], b[3] = 0x20, 0x01, byte(r.IntN(256)), byte(r.IntN(256))
				p = append(p, netip.PrefixFrom(netip.AddrFrom16(b), r.IntN(129)).Masked())
			}
		}
		return p
	}
	switch r.IntN(3) {
	case 0:
		c.InboundPortsInclude = rules.Ports{All: true}
	case 1:
		c.InboundPortsInclude = rules.Ports{Ports: ports(3)}
	default:
		c.InboundPortsInclude = rules.Ports{}
	}
	c.InboundPortsExclude = append(c.InboundPortsExclude, ports(2)...)
	c.OutboundPortsInclude, c.OutboundPortsExclude = ports(2), append(c.OutboundPortsExclude, ports(2)...)
	if r.IntN(2) == 0 {
		c.OutboundIPRangesInclude = rules.Ranges{Prefixes: prefixes(3)}
	}
	c.OutboundIPRangesExclude = prefixes(3)
	for i := r.IntN(3); i > 0; i-- {
		c.ExcludeInterfaces = append(c.ExcludeInterfaces, fmt.Sprintf("net%d", r.IntN(100)))
	}
	for i := r.IntN(3); i > 0; i-- {
		c.RerouteVirtualInterfaces = append(c.RerouteVirtualInterfaces, fmt.Sprintf("virt-%d.x", r.IntN(1000)))
	}
	if r.IntN(3) == 0 {
		c.ProxyUIDs, c.ProxyGIDs = []uint32{uint32(r.IntN(70000)), 1337}, []uint32{uint32(r.IntN(70000))}
	}
	c.DropInvalid = r.IntN(3) == 0
	if r.IntN(2) == 0 {
		c.RedirectDNS, c.CaptureAllDNS = true, r.IntN(2) == 0
		c.DNSServersV4 = []string{fmt.Sprintf("10.96.%d.10", r.IntN(256))}
		c.DNSServersV6 = []string{fmt.Sprintf("fd00::%x", r.IntN(65536))}
	}
	return c
}

// TestTwinRandomized: for random pods, our netlink batch leaves the kernel exactly as `nft -f` of
// our own text does (the text itself is pinned to Istio's by the goldens): read back over netlink
// and `nft list table` alike. The seed is logged; NFT_TWIN_SEED replays one.
func TestTwinRandomized(t *testing.T) {
	requireNft(t)
	seed := rand.Uint64()
	if s := os.Getenv("NFT_TWIN_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	a, ctx := NewApplier(), context.Background()
	for i := 0; i < 40; i++ {
		cfg := randomConfig(r)
		rs, err := Generate(cfg)
		if err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
		text, ours := testutil.NewNetns(t), testutil.NewNetns(t)
		path := filepath.Join(t.TempDir(), "pod.nft")
		if err := os.WriteFile(path, []byte(rs.Text()), 0o600); err != nil {
			t.Fatal(err)
		}
		text.Run(t, "nft", "-f", path)
		ho := openNS(t, ours)
		if _, err := a.Apply(ctx, ho, "random", cfg); err != nil {
			t.Fatalf("pod %d: %v\n%s", i, err, rs.Text())
		}
		if ok, diff := liveState(t, openNS(t, text)).Equal(liveState(t, ho)); !ok {
			t.Fatalf("pod %d: netlink read-back differs from nft -f: %s\n%s", i, diff, rs.Text())
		}
		if lt, lo := listTables(t, text), listTables(t, ours); lt != lo {
			t.Fatalf("pod %d: nft list table differs:\nnft -f:\n%s\nours:\n%s", i, lt, lo)
		}
	}
}

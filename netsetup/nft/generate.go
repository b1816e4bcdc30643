package nft

import (
	"fmt"
	"net/netip"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

const (
	outboundMark  = 1338  // TPROXY: Envoy outbound -> Envoy inbound on lo
	dnsListenPort = 15053 // istio-agent's DNS proxy
	dnsPort       = 53
)

var (
	v6Loopback    = netip.MustParsePrefix("::1/128")
	v4Passthrough = netip.MustParsePrefix("127.0.0.6/32")
	v6Passthrough = netip.MustParsePrefix("::6/128")
)

// Generate builds the nftables rule set Istio's istio-iptables --native-nftables installs for cfg
// (tools/istio-nftables/pkg/capture/run.go). ModeNone yields an empty rule set. It fails only on
// a configuration Istio itself refuses, and with a *rules.LimitError (before generating anything)
// on one over the limits.
func Generate(cfg *rules.Config) (*Ruleset, error) {
	if cfg.InterceptionMode == rules.ModeNone {
		return &Ruleset{}, nil
	}
	if err := rules.CheckGenerate(cfg); err != nil {
		return nil, err
	}
	g := &gen{c: cfg}
	g.run()
	if g.err != nil {
		return nil, g.err
	}
	rs := &Ruleset{routes: rules.Routes{LoopbackV6: cfg.EnableIPv6}}
	rs.Tables, rs.ops = build(g.reqs)
	in := cfg.InboundPortsInclude
	if g.tproxy() && (in.All || len(in.Ports) > 0) {
		rs.routes.TProxy, rs.routes.Mark, rs.routes.Table = true, cfg.TProxyMark, cfg.TProxyRouteTable
	}
	return rs, nil
}

type gen struct {
	c    *rules.Config
	reqs []op
	err  error
}

func (g *gen) add(table, chain string, items ...Item) {
	g.reqs = append(g.reqs, op{table: table, chain: chain, rule: items})
}

func (g *gen) add6(table, chain string, items ...Item) {
	if g.c.EnableIPv6 {
		g.add(table, chain, items...)
	}
}

func (g *gen) insert(table, chain string, index int, items ...Item) {
	g.reqs = append(g.reqs, op{table: table, chain: chain, insert: true, index: index, rule: items})
}

func (g *gen) insert6(table, chain string, index int, items ...Item) {
	if g.c.EnableIPv6 {
		g.insert(table, chain, index, items...)
	}
}

func (g *gen) tproxy() bool { return g.c.InterceptionMode == rules.ModeTProxy }

// Item shorthands.
var (
	tcp = l4proto{protoTCP}
	ctr = counter{}
	ret = verdict{kind: "return"}
	lo  = "lo"
)

func jump(chain string) verdict                { return verdict{kind: "jump", chain: chain} }
func dport(proto uint8, p ...uint16) portMatch { return portMatch{proto: proto, ports: p} }
func notDport(p ...uint16) portMatch           { return portMatch{proto: protoTCP, neg: true, ports: p} }
func iif(name string) ifname                   { return ifname{name: name} }
func oif(name string) ifname                   { return ifname{out: true, name: name} }
func daddr(p netip.Prefix) addrMatch           { return addrMatch{prefix: p, text: p.String()} }
func notDaddr(p netip.Prefix) addrMatch        { return addrMatch{neg: true, prefix: p, text: p.String()} }
func saddr(p netip.Prefix) addrMatch           { return addrMatch{src: true, prefix: p, text: p.String()} }
func uid(id uint32, neg bool) owner            { return owner{neg: neg, id: fmt.Sprint(id)} }
func gid(id uint32, neg bool) owner            { return owner{gid: true, neg: neg, id: fmt.Sprint(id)} }

// server matches a DNS server's address as Istio writes it: as given, host prefix length appended.
func (g *gen) server(s string, bits string) addrMatch {
	p, err := netip.ParsePrefix(s + bits)
	if err != nil && g.err == nil {
		g.err = fmt.Errorf("DNS server %q: %w", s, err)
	}
	return addrMatch{prefix: p, text: s + bits}
}

// run mirrors Istio's NftablesConfigurator.Run step by step.
func (g *gen) run() {
	c := g.c
	loop4 := c.HostIPv4LoopbackCIDR
	in4, in6 := split(c.OutboundIPRangesInclude.Prefixes)
	ex4, ex6 := split(c.OutboundIPRangesExclude)
	includeHasLoopback := false
	for _, p := range c.OutboundIPRangesInclude.Prefixes {
		includeHasLoopback = includeHasLoopback || p.Addr().IsLoopback()
	}
	redirectDNS := c.RedirectDNS && (c.CaptureAllDNS || len(c.DNSServersV4) > 0 || len(c.DNSServersV6) > 0)

	for _, nic := range c.ExcludeInterfaces {
		g.add(TableNat, chainPrerouting, iif(nic), ctr, ret)
		g.add(TableNat, chainOutput, oif(nic), ctr, ret)
	}
	if g.tproxy() {
		for _, nic := range c.ExcludeInterfaces {
			g.add(TableMangle, chainPrerouting, iif(nic), ctr, ret)
			g.add(TableMangle, chainOutput, oif(nic), ctr, ret)
		}
	}
	for _, nic := range c.RerouteVirtualInterfaces {
		g.insert(TableNat, chainPrerouting, 0, iif(nic), ctr, ret)
	}
	if c.DropInvalid {
		g.add(TableMangle, chainPrerouting, tcp, ctState{"invalid", ctInvalid}, ctr, jump(chainDrop))
		g.add(TableMangle, chainDrop, ctr, verdict{kind: "drop"})
	}
	g.add(TableNat, chainInbound, tcp, dport(protoTCP, c.InboundTunnelPort), ctr, ret)
	g.add(TableNat, chainRedirect, tcp, ctr, redirect{c.ProxyPort})
	g.add(TableNat, chainInRedirect, tcp, ctr, redirect{c.InboundCapturePort})
	g.inbound()

	g.add(TableNat, chainOutput, ctr, jump(chainOutputIst))
	for _, p := range c.OutboundPortsExclude {
		g.add(TableNat, chainOutputIst, dport(protoTCP, p), ctr, ret)
		g.add(TableNat, chainOutputIst, dport(protoUDP, p), ctr, ret)
	}
	g.add(TableNat, chainOutputIst, oif(lo), saddr(v4Passthrough), ctr, ret)
	g.add6(TableNat, chainOutputIst, oif(lo), saddr(v6Passthrough), ctr, ret)
	self := []uint16{c.InboundTunnelPort}
	if redirectDNS {
		self = []uint16{dnsPort, c.InboundTunnelPort}
	}
	for _, id := range c.ProxyUIDs {
		g.owner(uid(id, false), uid(id, true), self, redirectDNS, includeHasLoopback)
	}
	for _, id := range c.ProxyGIDs {
		g.owner(gid(id, false), gid(id, true), []uint16{c.InboundTunnelPort}, redirectDNS, includeHasLoopback)
	}
	g.ownerGroups()
	if redirectDNS {
		g.dns()
	}
	g.add(TableNat, chainOutputIst, daddr(loop4), ctr, ret)
	g.add6(TableNat, chainOutputIst, daddr(v6Loopback), ctr, ret)
	for _, p := range ex4 {
		g.add(TableNat, chainOutputIst, daddr(p), ctr, ret)
	}
	for _, p := range ex6 {
		g.add6(TableNat, chainOutputIst, daddr(p), ctr, ret)
	}
	for _, p := range c.OutboundPortsInclude {
		g.add(TableNat, chainOutputIst, dport(protoTCP, p), ctr, jump(chainRedirect))
	}
	g.outboundInclude(in4, in6)
	if g.tproxy() {
		g.tproxyMarks()
	}
}

// owner adds the rules of one proxy UID or GID: its own traffic to itself through lo goes to the
// inbound redirect, the app's traffic on lo is not captured, and the proxy's own traffic never is.
func (g *gen) owner(is, isNot owner, self []uint16, redirectDNS, includeHasLoopback bool) {
	g.add(TableNat, chainOutputIst, oif(lo), tcp, notDaddr(g.c.HostIPv4LoopbackCIDR), notDport(self...), is, ctr, jump(chainInRedirect))
	g.add6(TableNat, chainOutputIst, oif(lo), tcp, notDaddr(v6Loopback), notDport(self...), is, ctr, jump(chainInRedirect))
	if !includeHasLoopback {
		if redirectDNS {
			g.add(TableNat, chainOutputIst, oif(lo), tcp, notDport(dnsPort), isNot, ctr, ret)
		} else {
			g.add(TableNat, chainOutputIst, oif(lo), isNot, ctr, ret)
		}
	}
	g.add(TableNat, chainOutputIst, is, ctr, ret)
}

// inbound mirrors handleInboundPortsInclude and handleInboundTProxyMode.
func (g *gen) inbound() {
	c := g.c
	in := c.InboundPortsInclude
	if !in.All && len(in.Ports) == 0 {
		return
	}
	table, capture := TableNat, chainInRedirect
	if g.tproxy() {
		mark := c.TProxyMark
		g.add(TableMangle, chainDivert, ctr, setMark{mark})
		g.add(TableMangle, chainDivert, ctr, verdict{kind: "accept"})
		g.add(TableMangle, chainTProxy, tcp, notDaddr(c.HostIPv4LoopbackCIDR), tproxy{false, c.InboundCapturePort}, setMark{mark}, ctr, verdict{kind: "accept"})
		g.add6(TableMangle, chainTProxy, tcp, notDaddr(v6Loopback), tproxy{true, c.InboundCapturePort}, setMark{mark}, ctr, verdict{kind: "accept"})
		table, capture = TableMangle, chainTProxy
	}
	g.add(table, chainPrerouting, tcp, ctr, jump(chainInbound))
	established := ctState{"related,established", ctRelated | ctEstablished}
	if in.All {
		for _, p := range c.InboundPortsExclude {
			g.add(table, chainInbound, tcp, dport(protoTCP, p), ctr, ret)
		}
		if g.tproxy() {
			g.add(table, chainInbound, tcp, established, ctr, jump(chainDivert))
		}
		g.add(table, chainInbound, tcp, ctr, jump(capture))
		return
	}
	for _, p := range in.Ports {
		if g.tproxy() {
			g.add(table, chainInbound, tcp, established, dport(protoTCP, p), ctr, jump(chainDivert))
		}
		g.add(table, chainInbound, tcp, dport(protoTCP, p), ctr, jump(capture))
	}
}

// ownerGroups mirrors handleCaptureByOwnerGroup.
func (g *gen) ownerGroups() {
	f := g.c.OwnerGroups
	if f.Except {
		for _, grp := range f.Groups {
			g.add(TableNat, chainOutputIst, owner{gid: true, id: grp}, ctr, ret)
		}
		return
	}
	var items []Item
	for _, grp := range f.Groups {
		items = append(items, owner{gid: true, neg: true, id: grp})
	}
	g.add(TableNat, chainOutputIst, append(items, ctr, ret)...)
}

// outboundInclude mirrors handleOutboundIncludeRules.
func (g *gen) outboundInclude(in4, in6 []netip.Prefix) {
	c := g.c
	if c.OutboundIPRangesInclude.All {
		g.add(TableNat, chainOutputIst, ctr, jump(chainRedirect))
		for _, nic := range c.RerouteVirtualInterfaces {
			g.insert(TableNat, chainPrerouting, 0, iif(nic), ctr, jump(chainRedirect))
		}
		return
	}
	for _, p := range in4 {
		for _, nic := range c.RerouteVirtualInterfaces {
			g.insert(TableNat, chainPrerouting, 0, iif(nic), daddr(p), ctr, jump(chainRedirect))
		}
		g.add(TableNat, chainOutputIst, daddr(p), ctr, jump(chainRedirect))
	}
	for _, p := range in6 {
		for _, nic := range c.RerouteVirtualInterfaces {
			g.insert6(TableNat, chainPrerouting, 0, iif(nic), daddr(p), ctr, jump(chainRedirect))
		}
		g.add6(TableNat, chainOutputIst, daddr(p), ctr, jump(chainRedirect))
	}
}

// tproxyMarks adds TPROXY mode's mark handling, after everything else, as Istio does.
func (g *gen) tproxyMarks() {
	c := g.c
	mark := c.TProxyMark
	loop4 := c.HostIPv4LoopbackCIDR
	g.add(TableMangle, chainPrerouting, tcp, markMatch{v: mark}, ctr, ctMarkFromMark{})
	g.add(TableMangle, chainOutput, oif(lo), tcp, markMatch{v: mark}, ctr, ret)
	for _, id := range c.ProxyUIDs {
		g.add(TableMangle, chainOutput, oif(lo), tcp, notDaddr(loop4), uid(id, false), ctr, setMark{outboundMark})
		g.add6(TableMangle, chainOutput, oif(lo), tcp, notDaddr(v6Loopback), uid(id, false), ctr, setMark{outboundMark})
	}
	for _, id := range c.ProxyGIDs {
		g.add(TableMangle, chainOutput, oif(lo), tcp, notDaddr(loop4), gid(id, false), ctr, setMark{outboundMark})
		g.add6(TableMangle, chainOutput, oif(lo), tcp, notDaddr(v6Loopback), gid(id, false), ctr, setMark{outboundMark})
	}
	g.add(TableMangle, chainOutput, tcp, markMatch{ct: true, v: mark}, ctr, markFromCtMark{})
	g.insert(TableMangle, chainInbound, 0, tcp, markMatch{v: mark}, ctr, ret)
	g.insert(TableMangle, chainInbound, 1, iif(lo), tcp, saddr(v4Passthrough), ctr, ret)
	g.insert6(TableMangle, chainInbound, 1, iif(lo), tcp, saddr(v6Passthrough), ctr, ret)
	g.insert(TableMangle, chainInbound, 2, iif(lo), tcp, markMatch{neg: true, v: outboundMark}, ctr, ret)
}

func split(prefixes []netip.Prefix) (v4, v6 []netip.Prefix) {
	for _, p := range prefixes {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	return v4, v6
}

package rules

import (
	"errors"
	"fmt"
	"strconv"
)

// Istio's chain names.
const (
	ChainOutput     = "ISTIO_OUTPUT"
	ChainOutputDNS  = "ISTIO_OUTPUT_DNS"
	ChainInbound    = "ISTIO_INBOUND"
	ChainDivert     = "ISTIO_DIVERT"
	ChainTProxy     = "ISTIO_TPROXY"
	ChainRedirect   = "ISTIO_REDIRECT"
	ChainInRedirect = "ISTIO_IN_REDIRECT"
	ChainDrop       = "ISTIO_DROP"
)

const (
	outboundMark   = "1338"  // TPROXY: Envoy outbound -> Envoy inbound on lo
	dnsListenPort  = "15053" // istio-agent's DNS proxy
	v6Loopback     = "::1/128"
	v4Passthrough  = "127.0.0.6/32" // inbound passthrough source
	v6Passthrough  = "::6/128"
	tcp, udp, nat  = "tcp", "udp", "nat"
	mangle, rawTbl = "mangle", "raw"
)

// Generate builds the rules Istio's sidecar generator (istio-iptables) installs for cfg, in
// Istio's order, per family. ModeNone yields an empty rule set. It fails on a configuration Istio
// itself refuses, and with a *LimitError (before generating anything) on one over the limits.
func Generate(cfg *Config) (*RuleSet, error) {
	g := &gen{cfg: cfg, rs: &RuleSet{ipv6: cfg.EnableIPv6}}
	if cfg.InterceptionMode == ModeNone {
		return g.rs, nil
	}
	if err := CheckGenerate(cfg); err != nil {
		return nil, err
	}
	v4, v6 := Count(cfg)
	g.rs.v4, g.rs.v6 = make([]Rule, 0, v4), make([]Rule, 0, v6)
	g.run()
	g.rs.routes = Routes{LoopbackV6: cfg.EnableIPv6}
	in := cfg.InboundPortsInclude
	if cfg.InterceptionMode == ModeTProxy && (in.All || len(in.Ports) > 0) {
		g.rs.routes.TProxy, g.rs.routes.Mark, g.rs.routes.Table = true, cfg.TProxyMark, cfg.TProxyRouteTable
	}
	return g.rs, nil
}

// CheckGenerate refuses, before anything is generated, a REDIRECT or TPROXY configuration that
// Istio itself refuses or that is over the limits (a *LimitError). Every backend's generator calls
// it first, so none can be made to build an unbounded rule set.
func CheckGenerate(cfg *Config) error {
	if cfg.InterceptionMode != ModeRedirect && cfg.InterceptionMode != ModeTProxy {
		return fmt.Errorf("interception mode %q: want REDIRECT, TPROXY or NONE", cfg.InterceptionMode)
	}
	if len(cfg.ProxyUIDs) == 0 || len(cfg.ProxyGIDs) == 0 {
		return errors.New("proxy UID and GID lists must not be empty")
	}
	return CheckLimits(cfg)
}

type gen struct {
	cfg *Config
	rs  *RuleSet
}

func (g *gen) appendV4(table, chain string, args ...string) {
	g.rs.v4 = append(g.rs.v4, Rule{Table: table, Chain: chain, Args: args})
}

func (g *gen) appendV6(table, chain string, args ...string) {
	if g.cfg.EnableIPv6 {
		g.rs.v6 = append(g.rs.v6, Rule{Table: table, Chain: chain, Args: args})
	}
}

func (g *gen) append(table, chain string, args ...string) {
	g.appendV4(table, chain, args...)
	g.appendV6(table, chain, args...)
}

func (g *gen) insertV4(table, chain string, pos int, args ...string) {
	g.rs.v4 = append(g.rs.v4, Rule{Table: table, Chain: chain, Insert: pos, Args: args})
}

func (g *gen) insertV6(table, chain string, pos int, args ...string) {
	if g.cfg.EnableIPv6 {
		g.rs.v6 = append(g.rs.v6, Rule{Table: table, Chain: chain, Insert: pos, Args: args})
	}
}

func (g *gen) insert(table, chain string, pos int, args ...string) {
	g.insertV4(table, chain, pos, args...)
	g.insertV6(table, chain, pos, args...)
}

// versioned appends a rule to both families, with the per-family value put where the arguments
// hold the placeholder "%".
func (g *gen) versioned(v4, v6, table, chain string, args ...string) {
	g.appendV4(table, chain, substitute(args, v4)...)
	g.appendV6(table, chain, substitute(args, v6)...)
}

func substitute(args []string, v string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "%" {
			a = v
		}
		out[i] = a
	}
	return out
}

func port(p uint16) string  { return strconv.FormatUint(uint64(p), 10) }
func id(n uint32) string    { return strconv.FormatUint(uint64(n), 10) }
func (g *gen) tproxy() bool { return g.cfg.InterceptionMode == ModeTProxy }

// run mirrors Istio's IptablesConfigurator.Run (tools/istio-iptables/pkg/capture/run.go) step by step.
func (g *gen) run() {
	c := g.cfg
	loop4 := c.HostIPv4LoopbackCIDR.String()
	v4Include, v6Include := splitRanges(c.OutboundIPRangesInclude.Prefixes)
	v4Exclude, v6Exclude := splitRanges(c.OutboundIPRangesExclude)
	includeHasLoopback := hasLoopback(c.OutboundIPRangesInclude.Prefixes)

	redirectDNS := c.RedirectDNS
	if redirectDNS && !c.CaptureAllDNS && len(c.DNSServersV4) == 0 && len(c.DNSServersV6) == 0 {
		redirectDNS = false // Istio: DNS capture silently disabled
	}

	// Excluded interfaces bypass everything.
	for _, nic := range c.ExcludeInterfaces {
		g.append(nat, "PREROUTING", "-i", nic, "-j", "RETURN")
		g.append(nat, "OUTPUT", "-o", nic, "-j", "RETURN")
	}
	if g.tproxy() {
		for _, nic := range c.ExcludeInterfaces {
			g.append(mangle, "PREROUTING", "-i", nic, "-j", "RETURN")
			g.append(mangle, "OUTPUT", "-o", nic, "-j", "RETURN")
		}
	}
	// Traffic arriving on virtual interfaces is not inbound traffic.
	for _, nic := range c.RerouteVirtualInterfaces {
		g.insert(nat, "PREROUTING", 1, "-i", nic, "-j", "RETURN")
	}
	if c.DropInvalid {
		g.append(mangle, "PREROUTING", "-m", "conntrack", "--ctstate", "INVALID", "-j", ChainDrop)
		g.append(mangle, ChainDrop, "-j", "DROP")
	}

	g.append(nat, ChainInbound, "-p", tcp, "--dport", port(c.InboundTunnelPort), "-j", "RETURN")
	g.append(nat, ChainRedirect, "-p", tcp, "-j", "REDIRECT", "--to-ports", port(c.ProxyPort))
	g.append(nat, ChainInRedirect, "-p", tcp, "-j", "REDIRECT", "--to-ports", port(c.InboundCapturePort))

	g.inbound(loop4)

	g.append(nat, "OUTPUT", "-j", ChainOutput)
	for _, p := range c.OutboundPortsExclude {
		g.append(nat, ChainOutput, "-p", tcp, "--dport", port(p), "-j", "RETURN")
		g.append(nat, ChainOutput, "-p", udp, "--dport", port(p), "-j", "RETURN")
	}
	g.versioned(v4Passthrough, v6Passthrough, nat, ChainOutput, "-o", "lo", "-s", "%", "-j", "RETURN")

	tunnel := port(c.InboundTunnelPort)
	for _, uid := range c.ProxyUIDs {
		u := id(uid)
		if redirectDNS {
			g.versioned(loop4, v6Loopback, nat, ChainOutput, "-o", "lo", "!", "-d", "%", "-p", tcp,
				"-m", "multiport", "!", "--dports", "53,"+tunnel, "-m", "owner", "--uid-owner", u, "-j", ChainInRedirect)
		} else {
			g.versioned(loop4, v6Loopback, nat, ChainOutput, "-o", "lo", "!", "-d", "%", "-p", tcp,
				"!", "--dport", tunnel, "-m", "owner", "--uid-owner", u, "-j", ChainInRedirect)
		}
		if !includeHasLoopback {
			if redirectDNS {
				g.append(nat, ChainOutput, "-o", "lo", "-p", tcp, "!", "--dport", "53", "-m", "owner", "!", "--uid-owner", u, "-j", "RETURN")
			} else {
				g.append(nat, ChainOutput, "-o", "lo", "-m", "owner", "!", "--uid-owner", u, "-j", "RETURN")
			}
		}
		g.append(nat, ChainOutput, "-m", "owner", "--uid-owner", u, "-j", "RETURN")
	}
	for _, gid := range c.ProxyGIDs {
		gs := id(gid)
		g.versioned(loop4, v6Loopback, nat, ChainOutput, "-o", "lo", "!", "-d", "%", "-p", tcp,
			"!", "--dport", tunnel, "-m", "owner", "--gid-owner", gs, "-j", ChainInRedirect)
		if !includeHasLoopback {
			if redirectDNS {
				g.append(nat, ChainOutput, "-o", "lo", "-p", tcp, "!", "--dport", "53", "-m", "owner", "!", "--gid-owner", gs, "-j", "RETURN")
			} else {
				g.append(nat, ChainOutput, "-o", "lo", "-m", "owner", "!", "--gid-owner", gs, "-j", "RETURN")
			}
		}
		g.append(nat, ChainOutput, "-m", "owner", "--gid-owner", gs, "-j", "RETURN")
	}

	g.ownerGroups()
	if redirectDNS {
		g.dns()
	}

	g.versioned(loop4, v6Loopback, nat, ChainOutput, "-d", "%", "-j", "RETURN")
	for _, p := range v4Exclude {
		g.appendV4(nat, ChainOutput, "-d", p, "-j", "RETURN")
	}
	for _, p := range v6Exclude {
		g.appendV6(nat, ChainOutput, "-d", p, "-j", "RETURN")
	}
	for _, p := range c.OutboundPortsInclude {
		g.append(nat, ChainOutput, "-p", tcp, "--dport", port(p), "-j", ChainRedirect)
	}
	all := c.OutboundIPRangesInclude.All
	g.outboundInclude(all, v4Include, g.appendV4, g.insertV4)
	g.outboundInclude(all, v6Include, g.appendV6, g.insertV6)

	if g.tproxy() {
		g.tproxyMarks(loop4)
	}
}

// inbound mirrors handleInboundPortsInclude.
func (g *gen) inbound(loop4 string) {
	c := g.cfg
	in := c.InboundPortsInclude
	if !in.All && len(in.Ports) == 0 {
		return
	}
	table := nat
	if g.tproxy() {
		mark := id(c.TProxyMark)
		g.append(mangle, ChainDivert, "-j", "MARK", "--set-mark", mark)
		g.append(mangle, ChainDivert, "-j", "ACCEPT")
		g.versioned(loop4, v6Loopback, mangle, ChainTProxy, "!", "-d", "%", "-p", tcp, "-j", "TPROXY",
			"--tproxy-mark", mark+"/0xffffffff", "--on-port", port(c.InboundCapturePort))
		table = mangle
	}
	g.append(table, "PREROUTING", "-p", tcp, "-j", ChainInbound)
	if in.All {
		for _, p := range c.InboundPortsExclude {
			g.append(table, ChainInbound, "-p", tcp, "--dport", port(p), "-j", "RETURN")
		}
		if g.tproxy() {
			g.append(mangle, ChainInbound, "-p", tcp, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", ChainDivert)
			g.append(mangle, ChainInbound, "-p", tcp, "-j", ChainTProxy)
		} else {
			g.append(nat, ChainInbound, "-p", tcp, "-j", ChainInRedirect)
		}
		return
	}
	for _, p := range in.Ports {
		ps := port(p)
		if g.tproxy() {
			g.append(mangle, ChainInbound, "-p", tcp, "--dport", ps, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", ChainDivert)
			g.append(mangle, ChainInbound, "-p", tcp, "--dport", ps, "-j", ChainTProxy)
		} else {
			g.append(nat, ChainInbound, "-p", tcp, "--dport", ps, "-j", ChainInRedirect)
		}
	}
}

// ownerGroups mirrors handleCaptureByOwnerGroup.
func (g *gen) ownerGroups() {
	f := g.cfg.OwnerGroups
	if f.Except {
		for _, grp := range f.Groups {
			g.append(nat, ChainOutput, "-m", "owner", "--gid-owner", grp, "-j", "RETURN")
		}
		return
	}
	var args []string
	for _, grp := range f.Groups {
		args = append(args, "-m", "owner", "!", "--gid-owner", grp)
	}
	g.append(nat, ChainOutput, append(args, "-j", "RETURN")...)
}

// dns mirrors SetupDNSRedir and addDNSConntrackZones.
func (g *gen) dns() {
	c := g.cfg
	g.append(rawTbl, "OUTPUT", "-j", ChainOutputDNS)
	if c.CaptureAllDNS || len(c.DNSServersV4) > 0 {
		g.appendV4(nat, ChainOutput, "-j", ChainOutputDNS)
	}
	if c.CaptureAllDNS || len(c.DNSServersV6) > 0 {
		g.appendV6(nat, ChainOutput, "-j", ChainOutputDNS)
	}
	if c.CaptureAllDNS {
		g.append(nat, ChainOutputDNS, "-p", tcp, "--dport", "53", "-j", "REDIRECT", "--to-ports", dnsListenPort)
		g.append(nat, ChainOutputDNS, "-p", udp, "--dport", "53", "-j", "REDIRECT", "--to-port", dnsListenPort)
	} else {
		for _, s := range c.DNSServersV4 {
			g.appendV4(nat, ChainOutputDNS, "-p", tcp, "--dport", "53", "-d", s+"/32", "-j", "REDIRECT", "--to-ports", dnsListenPort)
		}
		for _, s := range c.DNSServersV6 {
			g.appendV6(nat, ChainOutputDNS, "-p", tcp, "--dport", "53", "-d", s+"/128", "-j", "REDIRECT", "--to-ports", dnsListenPort)
		}
		for _, s := range c.DNSServersV4 {
			g.appendV4(nat, ChainOutputDNS, "-p", udp, "--dport", "53", "-d", s+"/32", "-j", "REDIRECT", "--to-port", dnsListenPort)
		}
		for _, s := range c.DNSServersV6 {
			g.appendV6(nat, ChainOutputDNS, "-p", udp, "--dport", "53", "-d", s+"/128", "-j", "REDIRECT", "--to-port", dnsListenPort)
		}
	}
	// Conntrack zones split proxy<->upstream (zone 1) from app<->proxy (zone 2) DNS traffic.
	for _, uid := range c.ProxyUIDs {
		g.append(rawTbl, ChainOutputDNS, "-p", udp, "--dport", "53", "-m", "owner", "--uid-owner", id(uid), "-j", "CT", "--zone", "1")
		g.append(rawTbl, ChainOutputDNS, "-p", udp, "--sport", dnsListenPort, "-m", "owner", "--uid-owner", id(uid), "-j", "CT", "--zone", "2")
	}
	for _, gid := range c.ProxyGIDs {
		g.append(rawTbl, ChainOutputDNS, "-p", udp, "--dport", "53", "-m", "owner", "--gid-owner", id(gid), "-j", "CT", "--zone", "1")
		g.append(rawTbl, ChainOutputDNS, "-p", udp, "--sport", dnsListenPort, "-m", "owner", "--gid-owner", id(gid), "-j", "CT", "--zone", "2")
	}
	if c.CaptureAllDNS {
		g.append(rawTbl, "PREROUTING", "-j", ChainInbound)
		g.append(rawTbl, ChainOutputDNS, "-p", udp, "--dport", "53", "-j", "CT", "--zone", "2")
		g.append(rawTbl, ChainInbound, "-p", udp, "--sport", "53", "-j", "CT", "--zone", "1")
		return
	}
	if len(c.DNSServersV4) > 0 {
		g.appendV4(rawTbl, "PREROUTING", "-j", ChainInbound)
	}
	for _, s := range c.DNSServersV4 {
		g.appendV4(rawTbl, ChainOutputDNS, "-p", udp, "--dport", "53", "-d", s+"/32", "-j", "CT", "--zone", "2")
		g.appendV4(rawTbl, ChainInbound, "-p", udp, "--sport", "53", "-s", s+"/32", "-j", "CT", "--zone", "1")
	}
	if len(c.DNSServersV6) > 0 {
		g.appendV6(rawTbl, "PREROUTING", "-j", ChainInbound)
	}
	for _, s := range c.DNSServersV6 {
		g.appendV6(rawTbl, ChainOutputDNS, "-p", udp, "--dport", "53", "-d", s+"/128", "-j", "CT", "--zone", "2")
		g.appendV6(rawTbl, ChainInbound, "-p", udp, "--sport", "53", "-s", s+"/128", "-j", "CT", "--zone", "1")
	}
}

// outboundInclude mirrors handleOutboundIncludeRules for one family.
func (g *gen) outboundInclude(all bool, prefixes []string,
	appendRule func(table, chain string, args ...string), insertRule func(table, chain string, pos int, args ...string)) {
	if all {
		appendRule(nat, ChainOutput, "-j", ChainRedirect)
		for _, nic := range g.cfg.RerouteVirtualInterfaces {
			insertRule(nat, "PREROUTING", 1, "-i", nic, "-j", ChainRedirect)
		}
		return
	}
	for _, p := range prefixes {
		for _, nic := range g.cfg.RerouteVirtualInterfaces {
			insertRule(nat, "PREROUTING", 1, "-i", nic, "-d", p, "-j", ChainRedirect)
		}
		appendRule(nat, ChainOutput, "-d", p, "-j", ChainRedirect)
	}
}

// tproxyMarks adds TPROXY mode's mark handling, after everything else, as Istio does.
func (g *gen) tproxyMarks(loop4 string) {
	c := g.cfg
	mark := id(c.TProxyMark)
	g.append(mangle, "PREROUTING", "-p", tcp, "-m", "mark", "--mark", mark, "-j", "CONNMARK", "--save-mark")
	g.append(mangle, "OUTPUT", "-p", tcp, "-o", "lo", "-m", "mark", "--mark", mark, "-j", "RETURN")
	for _, uid := range c.ProxyUIDs {
		g.versioned(loop4, v6Loopback, mangle, "OUTPUT", "!", "-d", "%", "-p", tcp, "-o", "lo",
			"-m", "owner", "--uid-owner", id(uid), "-j", "MARK", "--set-mark", outboundMark)
	}
	for _, gid := range c.ProxyGIDs {
		g.versioned(loop4, v6Loopback, mangle, "OUTPUT", "!", "-d", "%", "-p", tcp, "-o", "lo",
			"-m", "owner", "--gid-owner", id(gid), "-j", "MARK", "--set-mark", outboundMark)
	}
	g.append(mangle, "OUTPUT", "-p", tcp, "-m", "connmark", "--mark", mark, "-j", "CONNMARK", "--restore-mark")
	g.insert(mangle, ChainInbound, 1, "-p", tcp, "-m", "mark", "--mark", mark, "-j", "RETURN")
	g.insertV4(mangle, ChainInbound, 2, "-p", tcp, "-s", v4Passthrough, "-i", "lo", "-j", "RETURN")
	g.insertV6(mangle, ChainInbound, 2, "-p", tcp, "-s", v6Passthrough, "-i", "lo", "-j", "RETURN")
	g.insert(mangle, ChainInbound, 3, "-p", tcp, "-i", "lo", "-m", "mark", "!", "--mark", outboundMark, "-j", "RETURN")
}

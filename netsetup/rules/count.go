package rules

import "net/netip"

// Count returns how many rules Generate makes for c in each family (v6 is 0 when IPv6 is off),
// from the list lengths alone: it allocates nothing, so a configuration can be refused before it
// is generated. It follows gen.run step by step; TestCountMatchesGenerate and the fuzz targets
// check that it agrees with Generate.
func Count(c *Config) (v4, v6 int) {
	if c.InterceptionMode != ModeRedirect && c.InterceptionMode != ModeTProxy {
		return 0, 0
	}
	in4, in6 := countFamilies(c.OutboundIPRangesInclude.Prefixes)
	ex4, ex6 := countFamilies(c.OutboundIPRangesExclude)
	both := c.countCommon()
	v4 = both + ex4 + c.countOutboundInclude(in4) + c.countDNS(len(c.DNSServersV4))
	if c.EnableIPv6 {
		v6 = both + ex6 + c.countOutboundInclude(in6) + c.countDNS(len(c.DNSServersV6))
	}
	return v4, v6
}

// countCommon counts the rules every family gets alike.
func (c *Config) countCommon() int {
	tproxy := c.InterceptionMode == ModeTProxy
	nics, virt := len(c.ExcludeInterfaces), len(c.RerouteVirtualInterfaces)
	ids := len(c.ProxyUIDs) + len(c.ProxyGIDs)
	n := 2*nics + virt + 3 // exclude-interface RETURNs, virtual-interface RETURNs, tunnel/redirect chains
	if tproxy {
		n += 2 * nics
	}
	if c.DropInvalid {
		n += 2
	}
	n += c.countInbound()
	n += 1 + 2*len(c.OutboundPortsExclude) + 1 // OUTPUT jump, excluded ports, passthrough source
	perID := 2
	if !hasLoopback(c.OutboundIPRangesInclude.Prefixes) {
		perID = 3
	}
	n += perID * ids
	if c.OwnerGroups.Except {
		n += len(c.OwnerGroups.Groups)
	} else {
		n++
	}
	n += 1 + len(c.OutboundPortsInclude) // loopback RETURN, included ports
	if tproxy {
		n += 6 + ids // tproxyMarks
	}
	return n
}

// countInbound mirrors gen.inbound.
func (c *Config) countInbound() int {
	in := c.InboundPortsInclude
	if !in.All && len(in.Ports) == 0 {
		return 0
	}
	tproxy := c.InterceptionMode == ModeTProxy
	n := 1 // PREROUTING jump
	if tproxy {
		n += 3 // ISTIO_DIVERT and ISTIO_TPROXY
	}
	switch {
	case in.All && tproxy:
		return n + len(c.InboundPortsExclude) + 2
	case in.All:
		return n + len(c.InboundPortsExclude) + 1
	case tproxy:
		return n + 2*len(in.Ports)
	}
	return n + len(in.Ports)
}

// countDNS mirrors gen.dns for one family holding servers DNS servers; 0 without DNS capture.
func (c *Config) countDNS(servers int) int {
	if !c.RedirectDNS || (!c.CaptureAllDNS && len(c.DNSServersV4) == 0 && len(c.DNSServersV6) == 0) {
		return 0
	}
	n := 1 + 2*(len(c.ProxyUIDs)+len(c.ProxyGIDs)) // raw OUTPUT jump, conntrack zones per ID
	if c.CaptureAllDNS {
		return n + 1 + 2 + 3
	}
	if servers > 0 {
		n += 1 + 1 // nat OUTPUT jump, raw PREROUTING jump
	}
	return n + 4*servers
}

// countOutboundInclude mirrors gen.outboundInclude for one family with prefixes included ranges.
func (c *Config) countOutboundInclude(prefixes int) int {
	virt := len(c.RerouteVirtualInterfaces)
	if c.OutboundIPRangesInclude.All {
		return 1 + virt
	}
	return prefixes * (virt + 1)
}

func countFamilies(prefixes []netip.Prefix) (v4, v6 int) {
	for _, p := range prefixes {
		if p.Addr().Is4() {
			v4++
		} else {
			v6++
		}
	}
	return v4, v6
}

package rules

import (
	"encoding/binary"
	"net/netip"
)

// Key is an exact, compact encoding of every field of c: two configurations have the same key
// exactly when they are equal, so the rules generated from them are the same. Appliers cache what
// they build from a configuration under it (a node's pods share a few configurations). Every
// field is written in declaration order, lists and strings with their lengths first; a test
// changes each field in turn and checks the key changes.
func (c *Config) Key() string {
	b := make([]byte, 0, 128)
	u := func(v uint64) { b = binary.AppendUvarint(b, v) }
	flag := func(v bool) {
		if v {
			u(1)
		} else {
			u(0)
		}
	}
	str := func(s string) { u(uint64(len(s))); b = append(b, s...) }
	strs := func(l []string) {
		u(uint64(len(l)))
		for _, s := range l {
			str(s)
		}
	}
	ports := func(l []uint16) {
		u(uint64(len(l)))
		for _, p := range l {
			u(uint64(p))
		}
	}
	ids := func(l []uint32) {
		u(uint64(len(l)))
		for _, v := range l {
			u(uint64(v))
		}
	}
	prefix := func(p netip.Prefix) {
		text, _ := p.MarshalBinary() // address (with zone), then bits; never fails
		u(uint64(len(text)))
		b = append(b, text...)
	}
	prefixes := func(l []netip.Prefix) {
		u(uint64(len(l)))
		for _, p := range l {
			prefix(p)
		}
	}

	u(uint64(c.ProxyPort))
	u(uint64(c.InboundCapturePort))
	u(uint64(c.InboundTunnelPort))
	ids(c.ProxyUIDs)
	ids(c.ProxyGIDs)
	str(string(c.InterceptionMode))
	u(uint64(c.TProxyMark))
	b = binary.AppendVarint(b, int64(c.TProxyRouteTable))
	flag(c.InboundPortsInclude.All)
	ports(c.InboundPortsInclude.Ports)
	ports(c.InboundPortsExclude)
	flag(c.OutboundIPRangesInclude.All)
	prefixes(c.OutboundIPRangesInclude.Prefixes)
	prefixes(c.OutboundIPRangesExclude)
	ports(c.OutboundPortsInclude)
	ports(c.OutboundPortsExclude)
	strs(c.ExcludeInterfaces)
	strs(c.RerouteVirtualInterfaces)
	flag(c.RedirectDNS)
	flag(c.CaptureAllDNS)
	strs(c.DNSServersV4)
	strs(c.DNSServersV6)
	flag(c.DropInvalid)
	flag(c.OwnerGroups.Except)
	strs(c.OwnerGroups.Groups)
	prefix(c.HostIPv4LoopbackCIDR)
	flag(c.EnableIPv6)
	return string(b)
}

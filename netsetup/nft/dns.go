package nft

// dns mirrors Istio's SetupDNSRedir and addDNSConntrackZones: DNS to the pod's nameservers (or
// all DNS with CaptureAllDNS) goes to istio-agent's DNS proxy, and conntrack zones keep the
// proxy's upstream queries (zone 1) apart from the app's queries to the proxy (zone 2).
func (g *gen) dns() {
	c := g.c
	var v4, v6 []addrMatch
	for _, s := range c.DNSServersV4 {
		v4 = append(v4, g.server(s, "/32"))
	}
	for _, s := range c.DNSServersV6 {
		v6 = append(v6, g.server(s, "/128"))
	}
	g.add(TableRaw, chainOutput, ctr, jump(chainOutputDNS))
	g.add(TableNat, chainOutputIst, ctr, jump(chainOutputDNS))
	toAgent := redirect{dnsListenPort}
	if c.CaptureAllDNS {
		g.add(TableNat, chainOutputDNS, tcp, dport(protoTCP, dnsPort), ctr, toAgent)
		g.add(TableNat, chainOutputDNS, dport(protoUDP, dnsPort), ctr, toAgent)
	} else {
		for _, proto := range []uint8{protoTCP, protoUDP} {
			for _, p := range v4 {
				g.add(TableNat, chainOutputDNS, p, dport(proto, dnsPort), ctr, toAgent)
			}
			for _, p := range v6 {
				g.add6(TableNat, chainOutputDNS, p, dport(proto, dnsPort), ctr, toAgent)
			}
		}
	}

	udpTo53 := dport(protoUDP, dnsPort)
	udpFrom53 := portMatch{proto: protoUDP, src: true, ports: []uint16{dnsPort}}
	fromAgent := portMatch{proto: protoUDP, src: true, ports: []uint16{dnsListenPort}}
	owners := make([]owner, 0, len(c.ProxyUIDs)+len(c.ProxyGIDs))
	for _, id := range c.ProxyUIDs {
		owners = append(owners, owner{meta: true, id: uid(id, false).id})
	}
	for _, id := range c.ProxyGIDs {
		owners = append(owners, owner{meta: true, gid: true, id: gid(id, false).id})
	}
	for _, o := range owners {
		g.add(TableRaw, chainOutputDNS, udpTo53, o, ctr, ctZone{1})
		g.add(TableRaw, chainOutputDNS, fromAgent, o, ctr, ctZone{2})
	}
	if c.CaptureAllDNS {
		g.add(TableRaw, chainPrerouting, ctr, jump(chainInbound))
		g.add(TableRaw, chainOutputDNS, udpTo53, ctr, ctZone{2})
		g.add(TableRaw, chainInbound, udpFrom53, ctr, ctZone{1})
		return
	}
	if len(v4) > 0 || len(v6) > 0 {
		g.add(TableRaw, chainPrerouting, ctr, jump(chainInbound))
	}
	for _, p := range v4 {
		g.add(TableRaw, chainOutputDNS, udpTo53, p, ctr, ctZone{2})
		g.add(TableRaw, chainInbound, udpFrom53, src(p), ctr, ctZone{1})
	}
	for _, p := range v6 {
		g.add6(TableRaw, chainOutputDNS, udpTo53, p, ctr, ctZone{2})
		g.add6(TableRaw, chainInbound, udpFrom53, src(p), ctr, ctZone{1})
	}
}

func src(a addrMatch) addrMatch {
	a.src = true
	return a
}

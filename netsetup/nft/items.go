package nft

import (
	"net/netip"
	"strconv"
	"strings"
)

// Item is one element of a rule: a match or a statement. It renders as nft text and, on Linux,
// compiles to netlink expressions (exprs_linux.go).
type Item interface {
	Text() string
}

// Transport protocols.
const (
	protoTCP uint8 = 6
	protoUDP uint8 = 17
)

func protoName(p uint8) string {
	if p == protoUDP {
		return "udp"
	}
	return "tcp"
}

func neq(neg bool) string {
	if neg {
		return "!= "
	}
	return ""
}

// ifname matches the input (iifname) or output (oifname) interface by its full name.
type ifname struct {
	out  bool
	name string
}

func (i ifname) Text() string {
	if i.out {
		return "oifname " + i.name
	}
	return "iifname " + i.name
}

// l4proto is "meta l4proto tcp".
type l4proto struct{ proto uint8 }

func (l l4proto) Text() string { return "meta l4proto " + protoName(l.proto) }

// portMatch is "tcp dport 53", "udp sport 15053", "tcp dport != 15008" or, with several ports,
// "tcp dport != { 53, 15008 }" (an anonymous set).
type portMatch struct {
	proto    uint8
	src, neg bool
	ports    []uint16
}

func (p portMatch) Text() string {
	dir := "dport"
	if p.src {
		dir = "sport"
	}
	s := make([]string, len(p.ports))
	for i, v := range p.ports {
		s[i] = strconv.Itoa(int(v))
	}
	val := s[0]
	if len(s) > 1 {
		val = "{ " + strings.Join(s, ", ") + " }"
	}
	return protoName(p.proto) + " " + dir + " " + neq(p.neg) + val
}

// addrMatch is "ip daddr 10.0.0.0/8", "ip6 saddr != ::6/128". text is the prefix as Istio writes
// it (host bits may be set, as in 127.0.0.1/8).
type addrMatch struct {
	src, neg bool
	prefix   netip.Prefix
	text     string
}

func (a addrMatch) Text() string {
	fam, dir := "ip", "daddr"
	if a.prefix.Addr().Is6() {
		fam = "ip6"
	}
	if a.src {
		dir = "saddr"
	}
	return fam + " " + dir + " " + neq(a.neg) + a.text
}

// owner is "skuid 1337", "skgid != 1337" or, as Istio writes it in the raw table, "meta skuid 3".
// id is a number or, for owner-group filters, a group name as given.
type owner struct {
	gid, neg, meta bool
	id             string
}

func (o owner) Text() string {
	key := "skuid "
	if o.gid {
		key = "skgid "
	}
	if o.meta {
		key = "meta " + key
	}
	return key + neq(o.neg) + o.id
}

// ctState is "ct state related,established" or "ct state invalid".
type ctState struct {
	names string
	bits  uint32
}

func (c ctState) Text() string { return "ct state " + c.names }

// Conntrack state bits (NF_CT_STATE_*).
const (
	ctInvalid     = 1
	ctEstablished = 2
	ctRelated     = 4
)

// markMatch is "mark 1337", "mark != 1338" or "ct mark 1337".
type markMatch struct {
	ct, neg bool
	v       uint32
}

func (m markMatch) Text() string {
	s := "mark " + neq(m.neg) + strconv.FormatUint(uint64(m.v), 10)
	if m.ct {
		return "ct " + s
	}
	return s
}

// counter counts packets and bytes.
type counter struct{}

func (counter) Text() string { return "counter" }

// verdict is "return", "accept", "drop" or "jump CHAIN".
type verdict struct {
	kind  string
	chain string
}

func (v verdict) Text() string {
	if v.kind == "jump" {
		return "jump " + v.chain
	}
	return v.kind
}

// redirect is "redirect to :PORT".
type redirect struct{ port uint16 }

func (r redirect) Text() string { return "redirect to :" + strconv.Itoa(int(r.port)) }

// tproxy is "tproxy ip to :PORT" (ip6 for IPv6).
type tproxy struct {
	v6   bool
	port uint16
}

func (t tproxy) Text() string {
	fam := "ip"
	if t.v6 {
		fam = "ip6"
	}
	return "tproxy " + fam + " to :" + strconv.Itoa(int(t.port))
}

// setMark is "meta mark set N".
type setMark struct{ v uint32 }

func (s setMark) Text() string { return "meta mark set " + strconv.FormatUint(uint64(s.v), 10) }

// ctMarkFromMark is "ct mark set mark" (save the packet mark on the connection).
type ctMarkFromMark struct{}

func (ctMarkFromMark) Text() string { return "ct mark set mark" }

// markFromCtMark is "meta mark set ct mark" (restore the connection's mark on the packet).
type markFromCtMark struct{}

func (markFromCtMark) Text() string { return "meta mark set ct mark" }

// ctZone is "ct zone set N".
type ctZone struct{ zone uint16 }

func (c ctZone) Text() string { return "ct zone set " + strconv.Itoa(int(c.zone)) }

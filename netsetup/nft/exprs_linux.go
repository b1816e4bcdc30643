package nft

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Compiled is a rule as netlink expressions, exactly as nft 1.0 compiles its text (the
// dependencies nft adds: "meta nfproto" before an ip/ip6 match in an inet table, "meta l4proto"
// before a port match without one; byte-aligned prefixes load only their bytes). Sets are the
// anonymous sets its lookups refer to, by index in Lookups.
type Compiled struct {
	Exprs   []expr.Any
	Sets    [][]uint16     // elements (ports) of each anonymous inet_service set
	Lookups []*expr.Lookup // Lookups[i] refers to Sets[i]; its set name and ID are set at apply
}

// Compile turns the rule into netlink expressions.
func (r Rule) Compile() (*Compiled, error) {
	b := &compiler{}
	for _, it := range r {
		c, ok := it.(compilable)
		if !ok {
			return nil, fmt.Errorf("rule %q: %T has no netlink form", r.Text(), it)
		}
		if err := c.compile(b); err != nil {
			return nil, fmt.Errorf("rule %q: %w", r.Text(), err)
		}
	}
	return &b.out, nil
}

// compilable is an Item with a netlink form (every Item of this package).
type compilable interface {
	compile(b *compiler) error
}

// compiler accumulates expressions and the protocol context nft tracks for dependencies.
type compiler struct {
	out     Compiled
	l4      uint8 // transport protocol already matched
	nfproto uint8 // network protocol already matched
}

func (b *compiler) emit(e ...expr.Any) { b.out.Exprs = append(b.out.Exprs, e...) }

func (b *compiler) cmp(op expr.CmpOp, data []byte) {
	b.emit(&expr.Cmp{Op: op, Register: 1, Data: data})
}

func cmpOp(neg bool) expr.CmpOp {
	if neg {
		return expr.CmpOpNeq
	}
	return expr.CmpOpEq
}

func (b *compiler) meta(key expr.MetaKey) { b.emit(&expr.Meta{Key: key, Register: 1}) }

func (b *compiler) needL4(proto uint8) {
	if b.l4 != proto {
		b.meta(expr.MetaKeyL4PROTO)
		b.cmp(expr.CmpOpEq, []byte{proto})
		b.l4 = proto
	}
}

func (b *compiler) needNFProto(proto uint8) {
	if b.nfproto != proto {
		b.meta(expr.MetaKeyNFPROTO)
		b.cmp(expr.CmpOpEq, []byte{proto})
		b.nfproto = proto
	}
}

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }
func be16(v uint16) []byte     { return binaryutil.BigEndian.PutUint16(v) }

// immediate loads data into register 1.
func (b *compiler) immediate(data []byte) { b.emit(&expr.Immediate{Register: 1, Data: data}) }

func (i ifname) compile(b *compiler) error {
	if len(i.name) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q: longer than %d bytes", i.name, unix.IFNAMSIZ-1)
	}
	key := expr.MetaKeyIIFNAME
	if i.out {
		key = expr.MetaKeyOIFNAME
	}
	b.meta(key)
	name := make([]byte, unix.IFNAMSIZ) // compared as 16 null-padded bytes
	copy(name, i.name)
	b.cmp(expr.CmpOpEq, name)
	return nil
}

func (l l4proto) compile(b *compiler) error {
	b.l4 = 0
	b.needL4(l.proto)
	return nil
}

func (p portMatch) compile(b *compiler) error {
	b.needL4(p.proto)
	offset := uint32(2)
	if p.src {
		offset = 0
	}
	b.emit(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: 2})
	if len(p.ports) == 1 {
		b.cmp(cmpOp(p.neg), be16(p.ports[0]))
		return nil
	}
	l := &expr.Lookup{SourceRegister: 1, Invert: p.neg}
	b.emit(l)
	b.out.Sets = append(b.out.Sets, p.ports)
	b.out.Lookups = append(b.out.Lookups, l)
	return nil
}

func (a addrMatch) compile(b *compiler) error {
	if !a.prefix.IsValid() {
		return fmt.Errorf("address %q: invalid prefix", a.text)
	}
	proto, offset := uint8(unix.NFPROTO_IPV4), uint32(16)
	if a.src {
		offset = 12
	}
	if a.prefix.Addr().Is6() {
		proto, offset = unix.NFPROTO_IPV6, 24
		if a.src {
			offset = 8
		}
	}
	b.needNFProto(proto)
	addr := a.prefix.Masked().Addr().AsSlice()
	bits, full := a.prefix.Bits(), len(addr)*8
	switch {
	case bits == full:
		b.emit(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(addr))})
		b.cmp(cmpOp(a.neg), addr)
	case bits%8 == 0 && bits > 0: // nft loads only the prefix's bytes
		n := bits / 8
		b.emit(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(n)})
		b.cmp(cmpOp(a.neg), addr[:n])
	default:
		mask := make([]byte, len(addr))
		for i := 0; i < bits; i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		b.emit(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(addr))},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(addr)), Mask: mask, Xor: make([]byte, len(addr))})
		b.cmp(cmpOp(a.neg), addr)
	}
	return nil
}

func (o owner) compile(b *compiler) error {
	n, err := strconv.ParseUint(o.id, 10, 32)
	if err != nil {
		// nft resolves a name in its own /etc/group; the controller has no pod's group database.
		return fmt.Errorf("owner %q: a numeric ID is required (names are not resolved)", o.id)
	}
	key := expr.MetaKeySKUID
	if o.gid {
		key = expr.MetaKeySKGID
	}
	b.meta(key)
	b.cmp(cmpOp(o.neg), native32(uint32(n)))
	return nil
}

func (c ctState) compile(b *compiler) error {
	b.emit(&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(c.bits), Xor: native32(0)})
	b.cmp(expr.CmpOpNeq, native32(0))
	return nil
}

func (m markMatch) compile(b *compiler) error {
	if m.ct {
		b.emit(&expr.Ct{Key: expr.CtKeyMARK, Register: 1})
	} else {
		b.meta(expr.MetaKeyMARK)
	}
	b.cmp(cmpOp(m.neg), native32(m.v))
	return nil
}

func (counter) compile(b *compiler) error {
	b.emit(&expr.Counter{})
	return nil
}

func (v verdict) compile(b *compiler) error {
	kinds := map[string]expr.VerdictKind{"return": expr.VerdictReturn, "accept": expr.VerdictAccept,
		"drop": expr.VerdictDrop, "jump": expr.VerdictJump}
	k, ok := kinds[v.kind]
	if !ok {
		return fmt.Errorf("verdict %q", v.kind)
	}
	b.emit(&expr.Verdict{Kind: k, Chain: v.chain})
	return nil
}

// natRangeProtoSpecified is NF_NAT_RANGE_PROTO_SPECIFIED: a port is given.
const natRangeProtoSpecified = 2

func (r redirect) compile(b *compiler) error {
	b.immediate(be16(r.port))
	b.emit(&expr.Redir{RegisterProtoMin: 1, Flags: natRangeProtoSpecified})
	return nil
}

func (t tproxy) compile(b *compiler) error {
	fam := byte(unix.NFPROTO_IPV4)
	if t.v6 {
		fam = unix.NFPROTO_IPV6
	}
	b.immediate(be16(t.port))
	b.emit(&expr.TProxy{Family: fam, TableFamily: unix.NFPROTO_INET, RegPort: 1})
	return nil
}

func (s setMark) compile(b *compiler) error {
	b.immediate(native32(s.v))
	b.emit(&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
	return nil
}

func (ctMarkFromMark) compile(b *compiler) error {
	b.meta(expr.MetaKeyMARK)
	b.emit(&expr.Ct{Key: expr.CtKeyMARK, SourceRegister: true, Register: 1})
	return nil
}

func (markFromCtMark) compile(b *compiler) error {
	b.emit(&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
	return nil
}

func (c ctZone) compile(b *compiler) error {
	zone := make([]byte, 2)
	binary.NativeEndian.PutUint16(zone, c.zone)
	b.immediate(zone)
	b.emit(&expr.Ct{Key: expr.CtKeyZONE, SourceRegister: true, Register: 1})
	return nil
}

package nft

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// rawRule is one rule as the kernel dumps it: its expressions' names and netlink data, unchanged.
// The rules are compared in this form, not through a decoder: a decoder that drops an attribute
// (a register's direction, an expression it does not know) would make different rules look equal.
type rawRule struct {
	exprs     []rawExpr
	userdata  []byte
	hasLookup bool
}

type rawExpr struct {
	name string
	data []byte
}

// dumpRules dumps every rule of the inet family in one request, by "table chain", in the
// kernel's order.
func dumpRules(nc *conn) (map[chainRef][]rawRule, error) {
	replies, err := nc.dump(unix.NFT_MSG_GETRULE)
	if err != nil {
		return nil, err
	}
	out := map[chainRef][]rawRule{}
	for _, data := range replies {
		table, chain, r, err := parseRule(data)
		if err != nil {
			return nil, err
		}
		k := chainRef{table, chain}
		out[k] = append(out[k], r)
	}
	return out, nil
}

// chainRef names a chain in the inet family.
type chainRef struct{ table, chain string }

// walk calls fn for each netlink attribute in b (type without the nested and byte-order flags);
// it fails on a truncated attribute. It allocates nothing.
func walk(b []byte, fn func(typ uint16, data []byte) error) error {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[:2]))
		if l < 4 || l > len(b) {
			return fmt.Errorf("netlink attribute of %d bytes in %d", l, len(b))
		}
		if err := fn(binary.NativeEndian.Uint16(b[2:4])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[4:l]); err != nil {
			return err
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return nil
}

// cstring returns the string before b's first NUL. Names a rule dump repeats (our tables, the
// chains, the expressions' names) are returned from a fixed set without allocating.
func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			b = b[:i]
			break
		}
	}
	if s, ok := interned[string(b)]; ok {
		return s
	}
	return string(b)
}

var interned = func() map[string]string {
	m := map[string]string{}
	for _, s := range append(ourTables[:len(ourTables):len(ourTables)],
		chainPrerouting, chainOutput, chainInbound, chainOutputIst, chainOutputDNS, chainRedirect,
		chainInRedirect, chainDivert, chainTProxy, chainDrop, "nat", "filter", "route", "bitwise", "cmp", "counter", "ct", "immediate",
		"lookup", "meta", "payload", "redir", "tproxy", "socket", "range", "fib", "byteorder", "notrack") {
		m[s] = s
	}
	return m
}()

func parseRule(data []byte) (table, chain string, r rawRule, err error) {
	err = walk(data, func(typ uint16, v []byte) error {
		switch typ {
		case unix.NFTA_RULE_TABLE:
			table = cstring(v)
		case unix.NFTA_RULE_CHAIN:
			chain = cstring(v)
		case unix.NFTA_RULE_USERDATA:
			r.userdata = v
		case unix.NFTA_RULE_EXPRESSIONS:
			r.exprs = make([]rawExpr, 0, 8)
			return walk(v, func(_ uint16, elem []byte) error {
				var x rawExpr
				err := walk(elem, func(t uint16, d []byte) error {
					switch t {
					case unix.NFTA_EXPR_NAME:
						x.name = cstring(d)
					case unix.NFTA_EXPR_DATA:
						x.data = d
					}
					return nil
				})
				r.hasLookup = r.hasLookup || x.name == "lookup"
				r.exprs = append(r.exprs, x)
				return err
			})
		}
		return nil
	})
	return table, chain, r, err
}

// describe is the comparable form of the rule: each expression's name and data as the kernel
// encodes it, except a counter's values and a lookup's set, which is named by its contents. The
// data are written as they are, each after its length, so the form is exact and unambiguous; it is
// compared, never shown (messages show the model's nft text).
func (r rawRule) describe(sets map[string]string) (string, error) {
	size := 16
	for _, x := range r.exprs {
		size += len(x.name) + len(x.data) + 4
	}
	b := make([]byte, 0, size+len(r.userdata))
	for _, x := range r.exprs {
		b = append(b, x.name...)
		b = append(b, 0)
		switch x.name {
		case "counter":
		case "lookup":
			d, err := describeLookup(x.data, sets)
			if err != nil {
				return "", err
			}
			b = binary.AppendUvarint(b, uint64(len(d)))
			b = append(b, d...)
		default:
			b = binary.AppendUvarint(b, uint64(len(x.data)))
			b = append(b, x.data...)
		}
	}
	if len(r.userdata) > 0 {
		b = append(b, "userdata\x00"...)
		b = binary.AppendUvarint(b, uint64(len(r.userdata)))
		b = append(b, r.userdata...)
	}
	return string(b), nil
}

func describeLookup(data []byte, sets map[string]string) (string, error) {
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return "", err
	}
	var set string
	var rest []string
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_LOOKUP_SET:
			set = ad.String()
		case unix.NFTA_LOOKUP_SET_ID:
		default:
			rest = append(rest, fmt.Sprintf("%d=%x", ad.Type(), ad.Bytes()))
		}
	}
	if err := ad.Err(); err != nil {
		return "", err
	}
	elems, ok := sets[set]
	if !ok {
		return "", fmt.Errorf("lookup of unknown set %q", set)
	}
	return fmt.Sprintf("lookup %s %s", strings.Join(rest, ","), elems), nil
}

// rawTable is one inet table as the kernel dumps it.
type rawTable struct {
	name  string
	flags uint32 // NFTA_TABLE_FLAGS: dormant, owner, persist
}

// dumpTables lists the inet tables.
func dumpTables(nc *conn) ([]rawTable, error) {
	replies, err := nc.dump(unix.NFT_MSG_GETTABLE)
	if err != nil {
		return nil, err
	}
	tables := make([]rawTable, 0, len(replies))
	for _, data := range replies {
		var t rawTable
		err := walk(data, func(typ uint16, v []byte) error {
			var err error
			switch typ {
			case unix.NFTA_TABLE_NAME:
				t.name = cstring(v)
			case unix.NFTA_TABLE_FLAGS:
				t.flags, err = getBE32(v)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		tables = append(tables, t)
	}
	return tables, nil
}

// rawChain is one chain as the kernel dumps it; hook is "" for a regular chain.
type rawChain struct {
	table, name, hook string
}

// hookNames and policyNames name the hooks and policies a chain dump reports.
var (
	hookNames = map[uint32]string{unix.NF_INET_PRE_ROUTING: "prerouting", unix.NF_INET_LOCAL_IN: "input",
		unix.NF_INET_FORWARD: "forward", unix.NF_INET_LOCAL_OUT: "output", unix.NF_INET_POST_ROUTING: "postrouting"}
	policyNames = map[uint32]string{1: "accept", 0: "drop"}
)

// dumpChains lists the inet chains in the kernel's order.
func dumpChains(nc *conn) ([]rawChain, error) {
	replies, err := nc.dump(unix.NFT_MSG_GETCHAIN)
	if err != nil {
		return nil, err
	}
	out := make([]rawChain, 0, len(replies))
	for _, data := range replies {
		c, err := parseChain(data)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func parseChain(data []byte) (rawChain, error) {
	var c rawChain
	var typ, policy, hook string
	var prio int32
	err := walk(data, func(t uint16, v []byte) error {
		switch t {
		case unix.NFTA_CHAIN_TABLE:
			c.table = cstring(v)
		case unix.NFTA_CHAIN_NAME:
			c.name = cstring(v)
		case unix.NFTA_CHAIN_TYPE:
			typ = cstring(v)
		case unix.NFTA_CHAIN_POLICY:
			p, err := getBE32(v)
			policy = policyNames[p]
			return err
		case unix.NFTA_CHAIN_HOOK:
			return walk(v, func(t uint16, v []byte) error {
				switch t {
				case unix.NFTA_HOOK_HOOKNUM:
					n, err := getBE32(v)
					hook = hookNames[n]
					return err
				case unix.NFTA_HOOK_PRIORITY:
					n, err := getBE32(v)
					prio = int32(n)
					return err
				}
				return nil
			})
		}
		return nil
	})
	if hook != "" {
		c.hook = hookString(typ, hook, prio, policy)
	}
	return c, err
}

// getBE32 reads a big-endian 32-bit netlink attribute.
func getBE32(v []byte) (uint32, error) {
	if len(v) != 4 {
		return 0, fmt.Errorf("netlink attribute of %d bytes, not 4", len(v))
	}
	return binary.BigEndian.Uint32(v), nil
}

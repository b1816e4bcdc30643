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
func dumpRules(nc *conn) (map[string][]rawRule, error) {
	replies, err := nc.dump(unix.NFT_MSG_GETRULE)
	if err != nil {
		return nil, err
	}
	out := map[string][]rawRule{}
	for _, data := range replies {
		table, chain, r, err := parseRule(data)
		if err != nil {
			return nil, err
		}
		out[table+" "+chain] = append(out[table+" "+chain], r)
	}
	return out, nil
}

func parseRule(data []byte) (table, chain string, r rawRule, err error) {
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return "", "", r, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_RULE_TABLE:
			table = ad.String()
		case unix.NFTA_RULE_CHAIN:
			chain = ad.String()
		case unix.NFTA_RULE_USERDATA:
			r.userdata = ad.Bytes()
		case unix.NFTA_RULE_EXPRESSIONS:
			ad.Nested(func(list *netlink.AttributeDecoder) error {
				for list.Next() {
					list.Nested(func(e *netlink.AttributeDecoder) error {
						var x rawExpr
						for e.Next() {
							switch e.Type() {
							case unix.NFTA_EXPR_NAME:
								x.name = e.String()
							case unix.NFTA_EXPR_DATA:
								x.data = e.Bytes()
							}
						}
						r.hasLookup = r.hasLookup || x.name == "lookup"
						r.exprs = append(r.exprs, x)
						return nil
					})
				}
				return nil
			})
		}
	}
	return table, chain, r, ad.Err()
}

// describe is the comparable form of the rule: each expression's name and data as the kernel
// encodes it, except a counter's values and a lookup's set, which is named by its contents.
func (r rawRule) describe(sets map[string]string) (string, error) {
	parts := make([]string, 0, len(r.exprs)+1)
	for _, x := range r.exprs {
		switch x.name {
		case "counter":
			parts = append(parts, "counter")
		case "lookup":
			d, err := describeLookup(x.data, sets)
			if err != nil {
				return "", err
			}
			parts = append(parts, d)
		default:
			parts = append(parts, fmt.Sprintf("%s %x", x.name, x.data))
		}
	}
	if len(r.userdata) > 0 {
		parts = append(parts, fmt.Sprintf("userdata %x", r.userdata))
	}
	return strings.Join(parts, "; "), nil
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

// dumpTables lists the names of the inet tables.
func dumpTables(nc *conn) ([]string, error) {
	replies, err := nc.dump(unix.NFT_MSG_GETTABLE)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, data := range replies {
		ad, err := netlink.NewAttributeDecoder(data)
		if err != nil {
			return nil, err
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_TABLE_NAME {
				names = append(names, ad.String())
			}
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// rawChain is one chain as the kernel dumps it; hook is "" for a regular chain.
type rawChain struct {
	table, name, hook string
}

// dumpChains lists the inet chains in the kernel's order.
func dumpChains(nc *conn) ([]rawChain, error) {
	replies, err := nc.dump(unix.NFT_MSG_GETCHAIN)
	if err != nil {
		return nil, err
	}
	hooks := map[uint32]string{unix.NF_INET_PRE_ROUTING: "prerouting", unix.NF_INET_LOCAL_IN: "input",
		unix.NF_INET_FORWARD: "forward", unix.NF_INET_LOCAL_OUT: "output", unix.NF_INET_POST_ROUTING: "postrouting"}
	var out []rawChain
	for _, data := range replies {
		ad, err := netlink.NewAttributeDecoder(data)
		if err != nil {
			return nil, err
		}
		ad.ByteOrder = binary.BigEndian
		var c rawChain
		var typ, policy string
		var hook string
		var prio int32
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_CHAIN_TABLE:
				c.table = ad.String()
			case unix.NFTA_CHAIN_NAME:
				c.name = ad.String()
			case unix.NFTA_CHAIN_TYPE:
				typ = ad.String()
			case unix.NFTA_CHAIN_POLICY:
				policy = map[uint32]string{1: "accept", 0: "drop"}[ad.Uint32()]
			case unix.NFTA_CHAIN_HOOK:
				ad.Nested(func(h *netlink.AttributeDecoder) error {
					h.ByteOrder = binary.BigEndian
					for h.Next() {
						switch h.Type() {
						case unix.NFTA_HOOK_HOOKNUM:
							hook = hooks[h.Uint32()]
						case unix.NFTA_HOOK_PRIORITY:
							prio = int32(h.Uint32())
						}
					}
					return nil
				})
			}
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
		if hook != "" {
			c.hook = hookString(typ, hook, prio, policy)
		}
		out = append(out, c)
	}
	return out, nil
}

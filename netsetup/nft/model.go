// Package nft is the native nftables backend: Istio's nftables rule set (istio-iptables
// --native-nftables) built from the same rules.Config as the iptables backend, as a model that
// renders both to Istio's nft transaction text and to netlink expressions, and (on Linux) an
// applier that programs a pod's network namespace with it in one netlink batch, with no nft binary.
package nft

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// Istio's table names (tools/istio-nftables/pkg/constants). All are in the inet family.
const (
	TableNat    = "istio-proxy-nat"
	TableMangle = "istio-proxy-mangle"
	TableRaw    = "istio-proxy-raw"
)

// Istio's chain names.
const (
	chainPrerouting = "prerouting"
	chainOutput     = "output"
	chainInbound    = "istio-inbound"
	chainOutputIst  = "istio-output"
	chainOutputDNS  = "istio-output-dns"
	chainRedirect   = "istio-redirect"
	chainInRedirect = "istio-in-redirect"
	chainDivert     = "istio-divert"
	chainTProxy     = "istio-tproxy"
	chainDrop       = "istio-drop"
)

// Hook makes a chain a base chain.
type Hook struct {
	Type     string // nat, filter, route
	Hook     string // prerouting, output
	Priority int32
}

// Chain is one chain of a table with its rules in their final (kernel) order.
type Chain struct {
	Name  string
	Base  *Hook // nil for a regular chain
	Rules []Rule
}

// Table is one inet table: the chains that hold rules, in the order Istio declares them.
type Table struct {
	Name   string
	Chains []*Chain
}

// Rule is a sequence of items, each a match or a statement, in the order nft prints them.
type Rule []Item

// Text renders the rule as nft writes it.
func (r Rule) Text() string {
	parts := make([]string, len(r))
	for i, it := range r {
		parts[i] = it.Text()
	}
	return strings.Join(parts, " ")
}

// op is one rule operation of Istio's transaction: an add, or an insert before position Index.
type op struct {
	table, chain string
	insert       bool
	index        int
	rule         Rule
}

// Ruleset is the generated nftables state of one configuration: the tables, Istio's transaction
// that builds them, and the routes that go with them.
type Ruleset struct {
	Tables []*Table
	ops    []op
	routes rules.Routes
	text   string // Text, rendered once: a Ruleset does not change after Generate
}

// Routes returns the routes the rule set needs (TPROXY policy routing, ::6 on lo).
func (rs *Ruleset) Routes() rules.Routes { return rs.routes }

// Empty reports whether there is nothing to program (interception mode NONE).
func (rs *Ruleset) Empty() bool { return len(rs.Tables) == 0 }

// Table returns the table called name, or nil.
func (rs *Ruleset) Table(name string) *Table {
	for _, t := range rs.Tables {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Hash is a short hash of the programmed state (the transaction text and the routes); "none" when
// there is nothing to program. It differs from the iptables backend's hash by construction.
func (rs *Ruleset) Hash() string {
	if rs.Empty() {
		return "none"
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("nftables\x00%s\x00%+v", rs.Text(), rs.routes)))
	return hex.EncodeToString(sum[:])[:16]
}

// Text renders Istio's nft transaction (what istio-iptables --native-nftables pipes to nft -f):
// per table, add and flush the table, declare the chains that hold rules, then the rule
// operations in Istio's order.
func (rs *Ruleset) Text() string {
	if rs.text == "" {
		rs.text = rs.render()
	}
	return rs.text
}

func (rs *Ruleset) render() string {
	var b strings.Builder
	for _, t := range rs.Tables {
		fmt.Fprintf(&b, "add table inet %s\nflush table inet %s\n", t.Name, t.Name)
		for _, c := range t.Chains {
			fmt.Fprintf(&b, "add chain inet %s %s", t.Name, c.Name)
			if c.Base != nil {
				fmt.Fprintf(&b, " { type %s hook %s priority %d ; }", c.Base.Type, c.Base.Hook, c.Base.Priority)
			}
			b.WriteString("\n")
		}
		for _, o := range rs.ops {
			if o.table != t.Name {
				continue
			}
			if o.insert {
				fmt.Fprintf(&b, "insert rule inet %s %s index %d %s\n", t.Name, o.chain, o.index, o.rule.Text())
			} else {
				fmt.Fprintf(&b, "add rule inet %s %s %s\n", t.Name, o.chain, o.rule.Text())
			}
		}
	}
	return b.String()
}

// tableLayout is the chains Istio may declare in each table, in its order, with the base chains'
// hooks (knftables' DNAT, mangle and raw priorities).
var tableLayout = []struct {
	name   string
	chains []Chain
}{
	{TableNat, []Chain{
		{Name: chainPrerouting, Base: &Hook{"nat", "prerouting", -100}},
		{Name: chainOutput, Base: &Hook{"nat", "output", -100}},
		{Name: chainInbound}, {Name: chainRedirect}, {Name: chainInRedirect}, {Name: chainOutputIst}, {Name: chainOutputDNS},
	}},
	{TableMangle, []Chain{
		{Name: chainPrerouting, Base: &Hook{"filter", "prerouting", -150}},
		{Name: chainOutput, Base: &Hook{"route", "output", -150}},
		{Name: chainDivert}, {Name: chainTProxy}, {Name: chainInbound}, {Name: chainDrop},
	}},
	{TableRaw, []Chain{
		{Name: chainPrerouting, Base: &Hook{"filter", "prerouting", -300}},
		{Name: chainOutput, Base: &Hook{"filter", "output", -300}},
		{Name: chainInbound}, {Name: chainOutputDNS},
	}},
}

// build turns the builder's rule requests into Istio's transaction and the final tables. As Istio
// does (addIstioTableRules), an insert into an empty chain or at or past its end becomes an add;
// the kernel order is then what nft makes of the adds and inserts in sequence.
func build(reqs []op) ([]*Table, []op) {
	var tables []*Table
	var ops []op
	for _, layout := range tableLayout {
		count := map[string]int{}
		for _, r := range reqs {
			if r.table == layout.name {
				count[r.chain]++
			}
		}
		t := &Table{Name: layout.name}
		byName := map[string]*Chain{}
		for _, c := range layout.chains {
			if count[c.Name] > 0 {
				ch := &Chain{Name: c.Name, Base: c.Base}
				t.Chains = append(t.Chains, ch)
				byName[c.Name] = ch
			}
		}
		if len(t.Chains) == 0 {
			continue
		}
		tables = append(tables, t)
		for _, r := range reqs {
			ch := byName[r.chain]
			if r.table != layout.name || ch == nil {
				continue
			}
			if r.insert && r.index < len(ch.Rules) {
				ch.Rules = slices.Insert(ch.Rules, r.index, r.rule)
			} else {
				r.insert = false
				ch.Rules = append(ch.Rules, r.rule)
			}
			ops = append(ops, r)
		}
	}
	return tables, ops
}

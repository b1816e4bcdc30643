package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Family is an address family.
type Family int

// Address families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

// Rule is one iptables rule: appended to Chain of Table, or inserted at position Insert (1-based)
// when Insert > 0. Args are the match and target arguments, e.g. ["-p", "tcp", "-j", "RETURN"].
type Rule struct {
	Table  string
	Chain  string
	Insert int
	Args   []string
}

// Spec renders the rule as Istio writes it in an iptables-restore payload:
// "-A CHAIN args..." or "-I CHAIN N args...".
func (r Rule) Spec() string {
	var b strings.Builder
	r.writeSpec(&b)
	return b.String()
}

// specLen is the length of Spec.
func (r Rule) specLen() int {
	n := len("-A ") + len(r.Chain) + len(r.Args)
	if r.Insert > 0 {
		n += 1 + len(strconv.Itoa(r.Insert))
	}
	for _, a := range r.Args {
		n += len(a)
	}
	return n
}

func (r Rule) writeSpec(b *strings.Builder) {
	if r.Insert > 0 {
		b.WriteString("-I " + r.Chain + " ")
		b.WriteString(strconv.Itoa(r.Insert))
	} else {
		b.WriteString("-A " + r.Chain)
	}
	for _, a := range r.Args {
		b.WriteByte(' ')
		b.WriteString(a)
	}
}

// Target returns the rule's jump target when it is the last argument pair ("-j X"), else "".
func (r Rule) Target() string {
	if n := len(r.Args); n >= 2 && r.Args[n-2] == "-j" {
		return r.Args[n-1]
	}
	return ""
}

// builtIn lists the built-in chains and targets Istio never declares (constants.BuiltInChainsAndTargetsMap).
var builtIn = map[string]bool{
	"INPUT": true, "OUTPUT": true, "FORWARD": true, "PREROUTING": true, "POSTROUTING": true,
	"ACCEPT": true, "RETURN": true, "DROP": true,
}

// IsBuiltinChain reports whether chain is one of the kernel's built-in chains (not ours).
func IsBuiltinChain(chain string) bool {
	switch chain {
	case "INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING":
		return true
	}
	return false
}

// RuleSet is the generated rules of one configuration, per address family, in Istio's order,
// and the routes that go with them.
type RuleSet struct {
	v4, v6 []Rule
	ipv6   bool
	routes Routes
}

// Routes is what a rule set needs besides iptables rules (Istio's tproxy.ConfigureRoutes).
type Routes struct {
	// TProxy: policy routing for TPROXY mode (fwmark Mark -> table Table, local default route on lo),
	// for each family. Only when TPROXY captures inbound ports.
	TProxy bool
	Mark   uint32
	Table  int
	// LoopbackV6: ::6/128 on lo, the IPv6 inbound-passthrough source, whenever IPv6 rules are on.
	LoopbackV6 bool
}

// Routes returns the routes the rule set needs.
func (rs *RuleSet) Routes() Routes { return rs.routes }

// Hash is a short hash of the complete programmed state the rule set describes: both families'
// payloads and the routes. It depends only on the configuration, not on the backend or the
// iptables version, so it is the same on every node; "none" when there is nothing to program.
func (rs *RuleSet) Hash() string {
	if rs.Empty() {
		return "none"
	}
	h := sha256.New()
	for _, f := range []Family{IPv4, IPv6} { // the bytes of "%s\x00%s\x00%+v", without copying the payloads
		_, _ = io.WriteString(h, rs.Payload(f))
		_, _ = h.Write([]byte{0})
	}
	fmt.Fprintf(h, "%+v", rs.routes)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Rules returns the rules of family f (nil for IPv6 when IPv6 is off).
func (rs *RuleSet) Rules(f Family) []Rule {
	if f == IPv6 {
		return rs.v6
	}
	return rs.v4
}

// Families returns the families the rule set programs.
func (rs *RuleSet) Families() []Family {
	if rs.ipv6 {
		return []Family{IPv4, IPv6}
	}
	return []Family{IPv4}
}

// Empty reports whether the rule set has no rules at all (interception mode NONE).
func (rs *RuleSet) Empty() bool { return len(rs.v4) == 0 && len(rs.v6) == 0 }

// TableChains is the set of our (non-built-in) chains of one family, per table, in the order Istio
// declares them.
type TableChains map[string][]string

// Tables returns the table names in sorted order.
func (tc TableChains) Tables() []string {
	names := make([]string, 0, len(tc))
	for t := range tc {
		names = append(names, t)
	}
	sort.Strings(names)
	return names
}

// Chains returns, per table, the chains Istio declares with -N for family f: first every chain that
// receives a rule, in order of appearance, then every jump target not yet declared.
func (rs *RuleSet) Chains(f Family) TableChains {
	tc := TableChains{}
	type key struct{ table, chain string }
	seen := map[key]bool{}
	add := func(table, chain string) {
		key := key{table, chain}
		if seen[key] {
			return
		}
		seen[key] = true
		if !builtIn[chain] {
			tc[table] = append(tc[table], chain)
		}
	}
	rules := rs.Rules(f)
	for _, r := range rules {
		add(r.Table, r.Chain)
	}
	for _, r := range rules {
		if t := r.Target(); t != "" {
			add(r.Table, t)
		}
	}
	return tc
}

// Payload renders family f as Istio's iptables-restore input: per table (sorted by name, tables
// without rules left out) the chain declarations, then the rules in order, then COMMIT. It is what
// Istio feeds a namespace that holds no Istio rules yet; it is not re-appliable as is.
func (rs *RuleSet) Payload(f Family) string {
	if f == IPv6 && !rs.ipv6 {
		return ""
	}
	chains := rs.Chains(f) // every table with a chain has rules
	rules := rs.Rules(f)
	var tables []string
	size := 0
	for _, r := range rules {
		if !slices.Contains(tables, r.Table) { // at most four tables
			tables = append(tables, r.Table)
			size += len(r.Table) + len("* \nCOMMIT\n")
			for _, c := range chains[r.Table] {
				size += len(c) + len("-N \n")
			}
		}
		size += r.specLen() + 1
	}
	sort.Strings(tables)
	var b strings.Builder
	b.Grow(size)
	for _, t := range tables {
		b.WriteString("* " + t + "\n")
		for _, c := range chains[t] {
			b.WriteString("-N " + c + "\n")
		}
		for _, r := range rules {
			if r.Table == t {
				r.writeSpec(&b)
				b.WriteByte('\n')
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

package nft

import (
	"context"
	"fmt"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// Live lists our tables in ns (inet istio-proxy-nat, -mangle, -raw, those that exist) as text
// close to `nft list table`, for inspect: per table its flags, per chain its hook, then its rules.
// There is no decompiler of netlink expressions to nft text, so a rule is printed as nft text only
// when its comparable form (see State) equals a rule of cfg's model, whose text is known; any
// other rule is printed as a marker line naming its expressions in order (liveMarker), never as
// guessed text. With cfg nil (no valid configuration) every rule gets the marker. It only reads:
// dumps over one netfilter netlink socket in ns (and a lookup's sets), no batch. key is unused.
func (a *Applier) Live(ctx context.Context, ns netsetup.Namespace, key string, cfg *rules.Config) (string, error) {
	model, note := a.ruleTexts(cfg) // before entering ns: a plan is built in a scratch namespace
	var tables []liveTable
	err := ns.Do(func() error {
		nc, err := dial()
		if err != nil {
			return err
		}
		defer nc.Close()
		tables, err = readLive(nc)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("network namespace %s: list the nftables tables: %w", ns.Path(), err)
	}
	return renderLive(tables, model, note), nil
}

// liveMarker starts the line Live prints for a rule it has no nft text for.
const liveMarker = "# rule not in the configuration's rule set: expressions "

// liveNoTables is Live's whole output when ns holds none of our tables.
var liveNoTables = "# no tables of ours (inet " + strings.Join(ourTables, ", ") + ")\n"

// liveModel is the nft text of the rules of a configuration's model, by comparable form.
type liveModel struct {
	chains map[chainRef]ChainState
	any    map[string]string // any chain's rule, the first of each form
}

// ruleTexts returns cfg's liveModel, and a comment line for the listing when there is no model
// to compare with (nil and the note).
func (a *Applier) ruleTexts(cfg *rules.Config) (*liveModel, string) {
	if cfg == nil {
		return nil, "# no valid configuration: no rule is compared with a rule set\n"
	}
	p, err := a.plan(cfg)
	if err != nil {
		return nil, fmt.Sprintf("# the configuration's rule set cannot be built (%s): no rule is compared with it\n", oneLine(err.Error()))
	}
	m := &liveModel{chains: map[chainRef]ChainState{}, any: map[string]string{}}
	for _, t := range p.m.state {
		for _, c := range t.Chains {
			m.chains[chainRef{t.Name, c.Name}] = c
			for j, r := range c.Rules {
				if _, dup := m.any[r]; !dup && j < len(c.texts) {
					m.any[r] = c.texts[j]
				}
			}
		}
	}
	return m, ""
}

// text is the nft text of a live rule of comparable form form, rule j of chain ref: the model's
// text of that rule when it is the same, else of the first rule of the same form in that chain,
// else in any chain. nft compiles some texts alike ("tcp dport 53" and "meta l4proto tcp tcp
// dport 53"): each is right, and the model's own one for the place is preferred.
func (m *liveModel) text(ref chainRef, j int, form string) (string, bool) {
	if m == nil || form == "" {
		return "", false
	}
	c := m.chains[ref]
	if j < len(c.Rules) && j < len(c.texts) && c.Rules[j] == form {
		return c.texts[j], true
	}
	for k, r := range c.Rules {
		if r == form && k < len(c.texts) {
			return c.texts[k], true
		}
	}
	text, ok := m.any[form]
	return text, ok
}

// liveTable, liveChain and liveRule are our tables as Live reads them: a rule keeps its
// expressions' names besides its comparable form.
type liveTable struct {
	name   string
	flags  uint32
	chains []liveChain
}

type liveChain struct {
	name, hook string // hook as rawChain's: "" for a regular chain
	rules      []liveRule
}

type liveRule struct {
	form  string   // comparable form; "" when it could not be described (why)
	why   string   // why not
	exprs []string // expression names, in order
}

// readLive reads our tables with their chains and rules in the kernel's order, as readState does,
// but keeps going past a rule it cannot describe (a lookup of a set it cannot read): that rule is
// listed with the reason instead.
func readLive(nc *conn) ([]liveTable, error) {
	present, chains, byChain, err := dumpOurs(nc)
	if err != nil {
		return nil, err
	}
	var out []liveTable
	for _, t := range present {
		out = append(out, liveTable{name: t.name, flags: t.flags})
	}
	for i := range out {
		t := &out[i]
		var sets map[string]string
		var setsErr error
		for _, c := range chains {
			if c.table != t.name {
				continue
			}
			lc := liveChain{name: c.name, hook: c.hook}
			for _, r := range byChain[chainRef{t.name, c.name}] {
				lr := liveRule{exprs: make([]string, len(r.exprs))}
				for k, x := range r.exprs {
					lr.exprs[k] = x.name
				}
				if r.hasLookup && sets == nil && setsErr == nil {
					if sets, setsErr = readSets(t.name); setsErr != nil {
						setsErr = fmt.Errorf("read the sets of table inet %s: %w", t.name, setsErr)
					}
				}
				err := setsErr
				if !r.hasLookup || setsErr == nil {
					lr.form, err = r.describe(sets)
				}
				if err != nil {
					lr.form, lr.why = "", oneLine(err.Error())
				}
				lc.rules = append(lc.rules, lr)
			}
			t.chains = append(t.chains, lc)
		}
	}
	return out, nil
}

// renderLive prints tables in the form of `nft list table`: a rule whose comparable form is in
// the model as its text, any other as a marker line.
func renderLive(tables []liveTable, m *liveModel, note string) string {
	var b strings.Builder
	b.WriteString(note)
	if len(tables) == 0 {
		b.WriteString(liveNoTables)
		return b.String()
	}
	for _, t := range tables {
		fmt.Fprintf(&b, "table inet %s {\n", t.name)
		if t.flags != 0 {
			fmt.Fprintf(&b, "\tflags %s\n", liveFlags(t.flags))
		}
		for i, c := range t.chains {
			if i > 0 {
				b.WriteString("\n")
			}
			fmt.Fprintf(&b, "\tchain %s {\n", c.name)
			if c.hook != "" {
				fmt.Fprintf(&b, "\t\t%s\n", liveHook(c.hook))
			}
			for j, r := range c.rules {
				fmt.Fprintf(&b, "\t\t%s\n", liveRuleText(r, m, chainRef{t.name, c.name}, j))
			}
			b.WriteString("\t}\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func liveRuleText(r liveRule, m *liveModel, ref chainRef, j int) string {
	if text, ok := m.text(ref, j, r.form); ok {
		return text
	}
	names := strings.Join(r.exprs, ", ")
	if len(r.exprs) == 0 {
		names = "none"
	}
	if r.why != "" {
		return "# rule not compared with the configuration's rule set (" + r.why + "): expressions " + names
	}
	return liveMarker + names
}

// liveHook turns a chain's "type T hook H priority P policy X" into nft's
// "type T hook H priority P; policy X;".
func liveHook(hook string) string {
	if spec, policy, ok := strings.Cut(hook, " policy "); ok {
		if policy == "" {
			return spec + ";"
		}
		return spec + "; policy " + policy + ";"
	}
	return hook + ";"
}

// liveFlags names a table's flags as nft does ("dormant"), unknown bits in hex.
func liveFlags(flags uint32) string {
	names, unknown := tableFlagNames(flags)
	if unknown != 0 {
		names = append(names, fmt.Sprintf("%#x", unknown))
	}
	return strings.Join(names, ",")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

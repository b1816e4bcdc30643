package netsetup

import (
	"fmt"
	"slices"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// State is our part of one family's iptables state, in iptables-save's canonical form: per table,
// our chains (every ISTIO_* chain) with their rules, and the rules of ours found in built-in chains.
// Rules are the arguments after "-A CHAIN".
type State map[string]*TableState

// TableState is our part of one table.
type TableState struct {
	Chains  map[string][]string // ISTIO_* chain -> rules, in order
	BuiltIn map[string][]string // built-in chain -> our rules in it, in order
	// IsDormant: with the nft backend, the nf_tables table is dormant (its rules kept, none
	// hooked; iptables-save does not show it). Never set in a canonical form.
	IsDormant bool
}

func (s State) table(name string) *TableState {
	t := s[name]
	if t == nil {
		t = &TableState{Chains: map[string][]string{}, BuiltIn: map[string][]string{}}
		s[name] = t
	}
	return t
}

// Dormant names the tables marked dormant, sorted.
func (s State) Dormant() []string {
	var out []string
	for name, t := range s {
		if t.IsDormant {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Empty reports whether the state holds nothing of ours.
func (s State) Empty() bool {
	for _, t := range s {
		if len(t.Chains) > 0 || len(t.BuiltIn) > 0 {
			return false
		}
	}
	return true
}

// isOurChain: every chain Istio's sidecar rules use is named ISTIO_*.
func isOurChain(name string) bool { return strings.HasPrefix(name, "ISTIO_") }

// ParseSave reads iptables-save output and keeps our part of it. A rule in a built-in chain is ours
// when it jumps to one of our chains or has the shape of one of the few non-jump rules Istio puts in
// built-in chains (see isOurBuiltInRule); anything else there belongs to someone else and is left alone.
func ParseSave(out string) (State, error) {
	st := State{}
	var table string
	for n, line := range strings.Split(out, "\n") {
		switch {
		case line == "" || line[0] == '#' || line == "COMMIT":
		case line[0] == '*':
			table = line[1:]
		case line[0] == ':':
			name, _, _ := strings.Cut(line[1:], " ")
			if isOurChain(name) {
				t := st.table(table)
				if _, ok := t.Chains[name]; !ok {
					t.Chains[name] = nil
				}
			}
		case strings.HasPrefix(line, "-A "):
			chain, args, _ := strings.Cut(line[3:], " ")
			switch {
			case isOurChain(chain):
				t := st.table(table)
				t.Chains[chain] = append(t.Chains[chain], args)
			case isOurBuiltInRule(table, args):
				t := st.table(table)
				t.BuiltIn[chain] = append(t.BuiltIn[chain], args)
			}
		default:
			return nil, fmt.Errorf("iptables-save output line %d: unexpected %q", n+1, line)
		}
	}
	for name, t := range st {
		if len(t.Chains) == 0 && len(t.BuiltIn) == 0 {
			delete(st, name)
		}
	}
	return st, nil
}

// isOurBuiltInRule recognizes, in iptables-save's canonical form, the rules Istio's generator puts in
// built-in chains: jumps to ISTIO_* chains, the exclude-interface RETURNs, and TPROXY mode's mark
// handling (CONNMARK save/restore, the loopback RETURN for marked packets, MARK 1338 by owner).
func isOurBuiltInRule(table, args string) bool {
	f := strings.Fields(args)
	n := len(f)
	if n < 2 {
		return false
	}
	j := slices.Index(f, "-j")
	if j < 0 || j == n-1 {
		return false
	}
	target, matches := f[j+1], f[:j]
	if isOurChain(target) {
		return true
	}
	switch {
	case target == "RETURN" && len(matches) == 2 && (matches[0] == "-i" || matches[0] == "-o"):
		return table == "nat" || table == "mangle" // exclude interfaces
	case table != "mangle":
		return false
	case target == "CONNMARK":
		return slices.Contains(f, "--save-mark") || slices.Contains(f, "--restore-mark")
	case target == "RETURN":
		return slices.Contains(matches, "-o") && slices.Contains(matches, "lo") && slices.Contains(matches, "--mark")
	case target == "MARK":
		return slices.Contains(matches, "owner") && strings.HasPrefix(strings.Join(f[j+2:], " "), "--set-xmark 0x53a/")
	}
	return false
}

// Equal reports whether two states are the same, and if not, the first difference.
func (s State) Equal(o State) (bool, string) {
	names := map[string]bool{}
	for n := range s {
		names[n] = true
	}
	for n := range o {
		names[n] = true
	}
	for _, n := range sortedKeys(names) {
		a, b := s[n], o[n]
		if a == nil || b == nil {
			return false, fmt.Sprintf("table %s: present in only one", n)
		}
		if a.IsDormant != b.IsDormant {
			return false, fmt.Sprintf("table %s: dormant %t, want %t (an nf_tables table flag: a dormant table's chains hook nothing)", n, b.IsDormant, a.IsDormant)
		}
		if d := diffChains("chain", a.Chains, b.Chains); d != "" {
			return false, "table " + n + ": " + d
		}
		if d := diffChains("built-in chain", a.BuiltIn, b.BuiltIn); d != "" {
			return false, "table " + n + ": " + d
		}
	}
	return true, ""
}

func diffChains(kind string, a, b map[string][]string) string {
	names := map[string]bool{}
	for n := range a {
		names[n] = true
	}
	for n := range b {
		names[n] = true
	}
	for _, n := range sortedKeys(names) {
		ra, oka := a[n]
		rb, okb := b[n]
		if oka != okb {
			return fmt.Sprintf("%s %s: present in only one", kind, n)
		}
		if !slices.Equal(ra, rb) {
			return fmt.Sprintf("%s %s: rules differ:\n  want %q\n  have %q", kind, n, ra, rb)
		}
	}
	return ""
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Transaction renders the iptables-restore --noflush input that moves a namespace from its current
// state (ours only, as probed) to the rule set rs for family f, atomically: our chains are declared
// (which flushes them under --noflush), our earlier rules in built-in chains are deleted, chains we
// no longer need are deleted, then Istio's rules are appended and inserted in Istio's order.
func Transaction(rs *rules.RuleSet, f rules.Family, current State) string {
	want := rs.Chains(f)
	byTable := map[string][]rules.Rule{}
	tables := map[string]bool{}
	for _, r := range rs.Rules(f) {
		byTable[r.Table] = append(byTable[r.Table], r)
		tables[r.Table] = true
	}
	for t := range want {
		tables[t] = true
	}
	for t := range current {
		tables[t] = true
	}
	var b strings.Builder
	for _, t := range sortedKeys(tables) {
		cur := current[t]
		if cur == nil {
			cur = &TableState{}
		}
		b.WriteString("*" + t + "\n")
		declared := map[string]bool{}
		for _, c := range want[t] {
			declared[c] = true
			b.WriteString(":" + c + " - [0:0]\n")
		}
		stale := []string{}
		for c := range cur.Chains {
			if !declared[c] {
				stale = append(stale, c)
			}
		}
		slices.Sort(stale)
		for _, c := range stale {
			b.WriteString(":" + c + " - [0:0]\n")
		}
		builtins := map[string]bool{}
		for c := range cur.BuiltIn {
			builtins[c] = true
		}
		for _, c := range sortedKeys(builtins) {
			for _, args := range cur.BuiltIn[c] {
				b.WriteString("-D " + c + " " + args + "\n")
			}
		}
		for _, c := range stale {
			b.WriteString("-X " + c + "\n")
		}
		for _, r := range byTable[t] {
			b.WriteString(r.Spec() + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

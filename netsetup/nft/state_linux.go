package nft

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
)

// ourTables are Istio's table names, in Istio's order.
var ourTables = []string{TableNat, TableMangle, TableRaw}

// State is the comparable form of our tables: per table (in ourTables order, only those that
// exist), each chain with its hook and its rules, each rule as the netlink encoding of its
// expressions with counter values left out and anonymous sets replaced by their elements. It is
// what the kernel holds, read back, or what the model asks for, compiled.
type State []TableState

// TableState is one table of a State.
type TableState struct {
	Name string
	// Flags are the table's NFTA_TABLE_FLAGS: 0 as nft -f of Istio's text makes it; a dormant
	// table (flag 0x1) keeps its rules but hooks none of them.
	Flags  uint32
	Chains []ChainState
}

// ChainState is one chain of a TableState. Hook is "" for a regular chain, else
// "type T hook H priority P policy accept".
type ChainState struct {
	Name  string
	Hook  string
	Rules []string
	texts []string // nft text of each rule, when known (the model's), for messages
}

// Equal reports whether s and o are the same state, and if not the first difference.
func (s State) Equal(o State) (bool, string) {
	names := func(st State) []string {
		var n []string
		for _, t := range st {
			n = append(n, t.Name)
		}
		return n
	}
	if !slices.Equal(names(s), names(o)) {
		return false, fmt.Sprintf("tables %v, want %v", names(o), names(s))
	}
	for i, t := range s {
		if t.Flags != o[i].Flags {
			return false, fmt.Sprintf("table inet %s: flags %s, want %s", t.Name, tableFlagsText(o[i].Flags), tableFlagsText(t.Flags))
		}
		if ok, diff := t.equal(o[i]); !ok {
			return false, "table inet " + t.Name + ": " + diff
		}
	}
	return true, ""
}

func (t TableState) equal(o TableState) (bool, string) {
	if len(t.Chains) != len(o.Chains) {
		return false, fmt.Sprintf("%d chains, want %d (%s)", len(o.Chains), len(t.Chains), chainNames(t.Chains))
	}
	for i, c := range t.Chains {
		h := o.Chains[i]
		switch {
		case c.Name != h.Name:
			return false, fmt.Sprintf("chain %d is %q, want %q", i, h.Name, c.Name)
		case c.Hook != h.Hook:
			return false, fmt.Sprintf("chain %s: hook %q, want %q", c.Name, h.Hook, c.Hook)
		case len(c.Rules) != len(h.Rules):
			return false, fmt.Sprintf("chain %s: %d rules, want %d", c.Name, len(h.Rules), len(c.Rules))
		}
		for j := range c.Rules {
			if c.Rules[j] != h.Rules[j] {
				want := hex.EncodeToString([]byte(c.Rules[j])) // the comparable form, when no text is known
				if j < len(c.texts) {
					want = c.texts[j]
				}
				return false, fmt.Sprintf("chain %s: rule %d differs, want %q", c.Name, j, want)
			}
		}
	}
	return true, ""
}

// tableFlagsText is flags in hex with the names of the known ones (linux/netfilter/nf_tables.h).
func tableFlagsText(flags uint32) string {
	if flags == 0 {
		return "0"
	}
	names, _ := tableFlagNames(flags)
	return fmt.Sprintf("%#x (%s)", flags, strings.Join(names, ", "))
}

// tableFlagNames names the known flags set in flags, as nft does, and returns the unknown bits.
func tableFlagNames(flags uint32) (names []string, unknown uint32) {
	for i, n := range []string{"dormant", "owner", "persist"} {
		if flags&(1<<i) != 0 {
			names = append(names, n)
			flags &^= 1 << i
		}
	}
	return names, flags
}

func chainNames(cs []ChainState) string {
	n := make([]string, len(cs))
	for i, c := range cs {
		n[i] = c.Name
	}
	return strings.Join(n, ", ")
}

func hookString(typ, hook string, prio int32, policy string) string {
	return fmt.Sprintf("type %s hook %s priority %d policy %s", typ, hook, prio, policy)
}

// readState reads our tables from the kernel as it encodes them: tables, chains and rules in one
// raw dump each on nc; sets (only when a rule looks one up) through google/nftables.
func readState(nc *conn) (State, error) {
	present, chains, rules, err := dumpOurs(nc)
	if err != nil || len(present) == 0 {
		return nil, err
	}
	st := make(State, 0, len(present))
	for _, t := range present {
		ts, err := readTable(t.name, chains, rules)
		if err != nil {
			return nil, fmt.Errorf("table inet %s: %w", t.name, err)
		}
		ts.Flags = t.flags
		st = append(st, ts)
	}
	return st, nil
}

// dumpOurs returns our tables that exist (in ourTables order) and, when there is one, every inet
// chain and rule: one raw dump each on nc.
func dumpOurs(nc *conn) ([]rawTable, []rawChain, map[chainRef][]rawRule, error) {
	tables, err := dumpTables(nc)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list inet tables: %w", err)
	}
	var present []rawTable
	for _, name := range ourTables {
		if i := slices.IndexFunc(tables, func(t rawTable) bool { return t.name == name }); i >= 0 {
			present = append(present, tables[i])
		}
	}
	if len(present) == 0 {
		return nil, nil, nil, nil
	}
	chains, err := dumpChains(nc)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list inet chains: %w", err)
	}
	rules, err := dumpRules(nc)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list inet rules: %w", err)
	}
	return present, chains, rules, nil
}

func readTable(name string, chains []rawChain, rules map[chainRef][]rawRule) (TableState, error) {
	ts := TableState{Name: name}
	var sets map[string]string
	for _, c := range chains {
		if c.table != name {
			continue
		}
		cs := ChainState{Name: c.name, Hook: c.hook}
		for _, r := range rules[chainRef{name, c.name}] {
			if sets == nil && r.hasLookup {
				var err error
				if sets, err = readSets(name); err != nil {
					return ts, err
				}
			}
			d, err := r.describe(sets)
			if err != nil {
				return ts, fmt.Errorf("chain %s: %w", c.name, err)
			}
			cs.Rules = append(cs.Rules, d)
		}
		ts.Chains = append(ts.Chains, cs)
	}
	return ts, nil
}

// readSets returns the comparable form of every set of t, by name.
func readSets(table string) (map[string]string, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, err
	}
	sets, err := conn.GetSets(&nftables.Table{Family: nftables.TableFamilyINet, Name: table})
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	out := map[string]string{}
	for _, s := range sets {
		elems, err := conn.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("set %s: list elements: %w", s.Name, err)
		}
		var ports []uint16
		for _, e := range elems {
			if len(e.Key) != 2 {
				return nil, fmt.Errorf("set %s: element of %d bytes, not a port", s.Name, len(e.Key))
			}
			ports = append(ports, binary.BigEndian.Uint16(e.Key))
		}
		var flags []string
		if s.Anonymous {
			flags = append(flags, "anonymous")
		}
		if s.Constant {
			flags = append(flags, "constant")
		}
		if s.Interval {
			flags = append(flags, "interval")
		}
		if s.IsMap {
			flags = append(flags, "map")
		}
		out[s.Name] = setKey(s.KeyType.Name, strings.Join(flags, ","), ports)
	}
	return out, nil
}

// setKey is the comparable form of a port set.
func setKey(keyType string, flags string, ports []uint16) string {
	p := slices.Clone(ports)
	slices.Sort(p)
	s := make([]string, len(p))
	for i, v := range p {
		s[i] = strconv.Itoa(int(v))
	}
	return fmt.Sprintf("set{%s %s %s}", keyType, flags, strings.Join(s, ","))
}

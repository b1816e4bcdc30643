package iptablestest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// transaction is one restore run: the table being edited (a copy, stored at COMMIT) and the checks
// the real tool makes only when it commits.
type transaction struct {
	backend string
	fam     rules.Family
	name    string // the tool, as it names itself
	work    *table
	// deferred is the first failure found before COMMIT that the real tool reports at COMMIT
	// (nft resolves jumps and deletes chains in the kernel; legacy checks target tables there).
	deferred func(commitLine int) error
}

// restore applies input like "restore [--noflush]": table by table, each stored at its COMMIT and
// only when every line of it was accepted. A failure stops the run; tables committed before it stay.
func (ns *Namespace) restore(backend string, fam rules.Family, input string, noflush bool) error {
	f := ns.fake
	f.mu.Lock()
	defer f.mu.Unlock()
	set := ns.set(backend, fam)
	tx := &transaction{backend: backend, fam: fam, name: prog(backend, fam, "restore")}
	lines := strings.Split(input, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for i, raw := range lines {
		n := i + 1
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' {
			continue
		}
		if tx.work == nil {
			if line[0] != '*' {
				return tx.failed(n, "")
			}
			name := strings.TrimSpace(line[1:])
			if builtinChains[name] == nil {
				if backend == NFT {
					return tx.parse(n, fmt.Sprintf("%s: line %d table name '%s' invalid", tx.name, n, name))
				}
				return tx.parse(n, fmt.Sprintf("%s: unable to initialize table '%s'", tx.name, name))
			}
			tx.work = newTable(name)
			if cur := set.tables[name]; cur != nil && noflush {
				tx.work = cur.clone()
			}
			continue
		}
		var err error
		switch {
		case line == "COMMIT":
			if tx.deferred != nil {
				return tx.deferred(n)
			}
			if err := tx.checkHooks(n); err != nil {
				return err
			}
			set.put(tx.work)
			tx.work = nil
		case line[0] == '*':
			err = &ExitError{2, fmt.Sprintf("Bad argument `%s'\nError occurred at line: %d\n", line, n)}
		case line[0] == ':':
			err = tx.declare(n, strings.Fields(line[1:]))
		default:
			err = tx.command(n, strings.Fields(line), f.unavailable)
		}
		if err != nil {
			return err
		}
	}
	if tx.work != nil {
		return &ExitError{1, fmt.Sprintf("%s: COMMIT expected at line %d\n", tx.name, len(lines)+1)}
	}
	return nil
}

// failed is the real tools' "line N failed" (exit code 1); nft adds the reason.
func (tx *transaction) failed(n int, reason string) error {
	if tx.backend == NFT && reason != "" {
		return &ExitError{1, fmt.Sprintf("%s: line %d failed: %s.\n", tx.name, n, reason)}
	}
	return &ExitError{1, fmt.Sprintf("%s: line %d failed\n", tx.name, n)}
}

// parse is a refusal while parsing a line (exit code 2).
func (tx *transaction) parse(n int, msg string) error {
	variant := "legacy"
	if tx.backend == NFT {
		variant = "nf_tables"
	}
	return &ExitError{2, fmt.Sprintf("%s v1.8.9 (%s): %s\nError occurred at line: %d\nTry `%s -h' or '%s --help' for more information.\n",
		tx.name, variant, msg, n, tx.name, tx.name)}
}

// atCommit records the first failure the real tool reports only at COMMIT.
func (tx *transaction) atCommit(fn func(commitLine int) error) {
	if tx.deferred == nil {
		tx.deferred = fn
	}
}

// declare handles ":CHAIN POLICY [packets:bytes]": a built-in chain's policy, or a user chain
// created, or flushed when it exists (--noflush).
func (tx *transaction) declare(n int, f []string) error {
	if len(f) < 2 {
		return tx.parse(n, "malformed chain declaration")
	}
	name, policy := f[0], f[1]
	t := tx.work
	if t.builtin(name) {
		switch policy {
		case "ACCEPT", "DROP":
			t.chains[name].policy = policy
		case "-":
		default:
			return tx.parse(n, fmt.Sprintf("Bad policy name `%s'", policy))
		}
		return nil
	}
	if policy != "-" && tx.backend == Legacy {
		return &ExitError{1, fmt.Sprintf("%s v1.8.9 (legacy): Can't set policy `%s' on `%s' line %d: Bad built-in chain name\n", tx.name, policy, name, n)}
	}
	if len(name) > 28 {
		return tx.parse(n, fmt.Sprintf("Invalid chain name `%s'", name))
	}
	if c := t.chains[name]; c != nil {
		c.rules = nil
		return nil
	}
	t.chains[name] = &chain{policy: "-"}
	return nil
}

// command handles one iptables command line: -A, -I, -D, -N, -X, -F, -P or -Z.
func (tx *transaction) command(n int, f []string, unavailable map[string]bool) error {
	long := map[string]string{"--append": "-A", "--insert": "-I", "--delete": "-D", "--new-chain": "-N",
		"--delete-chain": "-X", "--flush": "-F", "--policy": "-P", "--zero": "-Z"}
	cmd := f[0]
	if l, ok := long[cmd]; ok {
		cmd = l
	}
	t := tx.work
	if cmd == "-Z" {
		return nil
	}
	if len(f) < 2 {
		if cmd == "-F" {
			for _, c := range t.chains {
				c.rules = nil
			}
			return nil
		}
		return tx.parse(n, fmt.Sprintf("option \"%s\" requires an argument", f[0]))
	}
	name, args := f[1], f[2:]
	c := t.chains[name]
	switch cmd {
	case "-N":
		if c != nil {
			return tx.failed(n, "Chain already exists")
		}
		if len(name) > 28 {
			return tx.parse(n, fmt.Sprintf("chain name `%s' too long (must be under 29 chars)", name))
		}
		t.chains[name] = &chain{policy: "-"}
		return nil
	case "-X":
		return tx.deleteChain(n, name)
	case "-P":
		if c == nil || !t.builtin(name) || len(args) != 1 || (args[0] != "ACCEPT" && args[0] != "DROP") {
			return tx.failed(n, "Bad built-in chain name")
		}
		c.policy = args[0]
		return nil
	case "-A", "-I", "-D", "-F":
	default:
		return tx.parse(n, fmt.Sprintf("fake iptables: command %s is not modelled", f[0]))
	}
	if c == nil {
		return tx.failed(n, "No chain/target/match by that name")
	}
	if cmd == "-F" {
		c.rules = nil
		return nil
	}
	pos := 0
	if len(args) > 0 && (cmd == "-I" || cmd == "-D") {
		if v, err := strconv.Atoi(args[0]); err == nil {
			if v < 1 {
				return tx.parse(n, fmt.Sprintf("Invalid rule number `%s'", args[0]))
			}
			pos, args = v, args[1:]
		}
	}
	if cmd == "-D" && pos > 0 {
		if len(args) > 0 || pos > len(c.rules) {
			return tx.failed(n, "Index of deletion too big")
		}
		c.rules = append(c.rules[:pos-1], c.rules[pos:]...)
		return nil
	}
	r, err := tx.rule(n, name, args, unavailable)
	if err != nil {
		return err
	}
	switch cmd {
	case "-A":
		c.rules = append(c.rules, r)
	case "-I":
		if pos == 0 {
			pos = 1
		}
		if pos > len(c.rules)+1 {
			return tx.failed(n, "Index of insertion too big")
		}
		c.rules = append(c.rules[:pos-1], append([]rule{r}, c.rules[pos-1:]...)...)
	case "-D":
		for i, have := range c.rules {
			if have.spec == r.spec {
				c.rules = append(c.rules[:i], c.rules[i+1:]...)
				return nil
			}
		}
		return tx.failed(n, "Bad rule (does a matching rule exist in that chain?)")
	}
	return nil
}

// rule parses a rule and checks its target against the table being edited.
func (tx *transaction) rule(n int, chainName string, args []string, unavailable map[string]bool) (rule, error) {
	r, err := parseRule(tx.fam, args)
	if err != nil {
		return rule{}, tx.parse(n, err.Error())
	}
	t := tx.work
	switch {
	case r.in && (chainName == "OUTPUT" || chainName == "POSTROUTING"):
		return rule{}, tx.parse(n, "Can't use -i with "+chainName)
	case r.out && (chainName == "PREROUTING" || chainName == "INPUT"):
		return rule{}, tx.parse(n, "Can't use -o with "+chainName)
	}
	restricted, known := targets[r.target]
	switch {
	case r.target == "":
	case unavailable[r.target]:
		return rule{}, tx.parse(n, fmt.Sprintf("Couldn't load target `%s':No such file or directory\n", r.target))
	case r.target == "DROP" && t.name == "nat":
		return rule{}, tx.parse(n, "\nThe \"nat\" table is not intended for filtering, the use of DROP is therefore inhibited.\n\n")
	case known && restricted != "" && restricted != t.name:
		if tx.backend == NFT {
			tx.atCommit(func(int) error {
				return &ExitError{4, fmt.Sprintf("%s v1.8.9 (nf_tables): \nline %d: RULE_APPEND failed (Invalid argument): rule in chain\n", tx.name, n)}
			})
		} else {
			tx.atCommit(func(commit int) error { return tx.failed(commit, "") })
		}
	case known:
	case t.chains[r.target] == nil || t.builtin(r.target):
		if tx.backend == NFT { // nft resolves the jump when it builds the batch, at COMMIT
			target := r.target
			tx.atCommit(func(commit int) error {
				return tx.parse(commit, fmt.Sprintf("Chain '%s' does not exist", target))
			})
			break
		}
		return rule{}, tx.parse(n, fmt.Sprintf("Couldn't load target `%s':No such file or directory\n", r.target))
	}
	return r, nil
}

// deleteChain handles -X: the chain must be a user chain, empty and unused (legacy refuses at once;
// nft's kernel refuses the batch at COMMIT with EBUSY).
func (tx *transaction) deleteChain(n int, name string) error {
	t := tx.work
	c := t.chains[name]
	if c == nil {
		return tx.failed(n, "No chain/target/match by that name")
	}
	if t.builtin(name) || len(c.rules) > 0 || t.references(name) > 0 {
		if tx.backend == Legacy {
			return tx.failed(n, "")
		}
		tx.atCommit(func(int) error {
			return &ExitError{4, fmt.Sprintf("%s v1.8.9 (nf_tables): \nline %d: CHAIN_DEL failed (Device or resource busy): chain %s\n", tx.name, n, name)}
		})
		return nil
	}
	delete(t.chains, name)
	return nil
}

// hookTargets are the targets the kernel allows only in some hooks.
var hookTargets = map[string][]string{
	"TPROXY":   {"PREROUTING"},
	"REDIRECT": {"PREROUTING", "OUTPUT"},
}

// checkHooks is the kernel's check at COMMIT: every rule reachable from a built-in chain uses only
// matches and targets valid in that chain's hook (owner in OUTPUT and POSTROUTING, TPROXY in
// PREROUTING, REDIRECT in PREROUTING and OUTPUT). The real nft tool names the rule's line; the fake
// names the COMMIT line.
func (tx *transaction) checkHooks(commit int) error {
	t := tx.work
	for _, hook := range builtinChains[t.name] {
		seen := map[string]bool{}
		var walk func(c string) string
		walk = func(c string) string {
			if seen[c] {
				return ""
			}
			seen[c] = true
			for _, r := range t.chains[c].rules {
				allowed, limited := hookTargets[r.target]
				switch {
				case r.owner && hook != "OUTPUT" && hook != "POSTROUTING",
					limited && !slices.Contains(allowed, hook):
					return c
				case t.chains[r.target] != nil && !t.builtin(r.target):
					if bad := walk(r.target); bad != "" {
						return bad
					}
				}
			}
			return ""
		}
		if bad := walk(hook); bad != "" {
			if tx.backend == NFT {
				return &ExitError{4, fmt.Sprintf("%s v1.8.9 (nf_tables): \nline %d: RULE_APPEND failed (Invalid argument): rule in chain %s (reached from %s)\n", tx.name, commit, bad, hook)}
			}
			return tx.failed(commit, "")
		}
	}
	return nil
}

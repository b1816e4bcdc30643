package nft

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// unchangedBy reads ns's tables and `nft list ruleset` before fn and again after it: fn (a Live)
// must leave both as they were.
func unchangedBy(t *testing.T, n *testutil.Netns, fn func()) {
	t.Helper()
	h := openNS(t, n)
	st, ruleset := liveState(t, h), n.Run(t, "nft", "list", "ruleset")
	fn()
	if ok, diff := st.Equal(liveState(t, h)); !ok {
		t.Fatalf("Live changed the namespace's tables: %s", diff)
	}
	if after := n.Run(t, "nft", "list", "ruleset"); after != ruleset {
		t.Fatalf("Live changed the ruleset:\nbefore:\n%s\nafter:\n%s", ruleset, after)
	}
}

// chainBlock returns the lines of chain `chain` of table `table` in Live's output, header to
// closing brace.
func chainBlock(t *testing.T, out, table, chain string) string {
	t.Helper()
	_, rest, ok := strings.Cut(out, "table inet "+table+" {\n")
	if !ok {
		t.Fatalf("no table %s in:\n%s", table, out)
	}
	rest, _, _ = strings.Cut(rest, "\n}\n")
	rest += "\n"
	_, block, ok := strings.Cut(rest, "\tchain "+chain+" {\n")
	if !ok {
		t.Fatalf("no chain %s in table %s:\n%s", chain, table, out)
	}
	block, _, _ = strings.Cut(block, "\t}\n")
	return block
}

// wantModel asserts that out lists exactly rs's tables, in Istio's order, each with its chains
// (hooks as nft prints them) and every rule of the model as its nft text, in the model's order.
func wantModel(t *testing.T, out string, rs *Ruleset) {
	t.Helper()
	var tables []string
	for _, line := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(line, "table inet "); ok {
			tables = append(tables, strings.TrimSuffix(name, " {"))
		}
	}
	var want []string
	for _, tb := range rs.Tables {
		want = append(want, tb.Name)
	}
	if fmt.Sprint(tables) != fmt.Sprint(want) {
		t.Fatalf("tables %v, want %v:\n%s", tables, want, out)
	}
	for _, tb := range rs.Tables {
		for _, c := range tb.Chains {
			block := chainBlock(t, out, tb.Name, c.Name)
			var lines []string
			if c.Base != nil {
				lines = append(lines, fmt.Sprintf("\t\ttype %s hook %s priority %d; policy accept;\n", c.Base.Type, c.Base.Hook, c.Base.Priority))
			}
			for _, r := range c.Rules {
				lines = append(lines, "\t\t"+r.Text()+"\n")
			}
			if got := strings.Join(lines, ""); block != got {
				t.Fatalf("table %s chain %s:\n%s\nwant:\n%s\nwhole output:\n%s", tb.Name, c.Name, block, got, out)
			}
		}
	}
}

// TestLiveListsTheModelsRules applies a configuration, lists the namespace with Live and finds the
// model's tables, chains and rules in nft's text with no marker; the listing changes nothing. The
// typical configuration (REDIRECT: the nat table only), and one with all three tables, TPROXY,
// IPv6 and a port set (a lookup).
// appliedNetns is a fresh namespace where a applied cfg, its handle and cfg's rule set.
func appliedNetns(t *testing.T, a *Applier, cfg *rules.Config) (*testutil.Netns, *netns.Handle, *Ruleset) {
	t.Helper()
	n := testutil.NewNetns(t)
	h := openNS(t, n)
	if _, err := a.Apply(context.Background(), h, "pod", cfg); err != nil {
		t.Fatal(err)
	}
	rs, err := Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n, h, rs
}

func TestLiveListsTheModelsRules(t *testing.T) {
	requireNft(t)
	all := config(rules.ModeTProxy, true)
	all.RedirectDNS, all.DNSServersV4, all.OutboundPortsExclude = true, []string{"10.96.0.10"}, []uint16{15020, 3306}
	for name, cfg := range map[string]*rules.Config{"default": rules.Default(), "three tables": all} {
		t.Run(name, func(t *testing.T) {
			a, ctx := NewApplier(), context.Background()
			n, h, rs := appliedNetns(t, a, cfg)
			var err error
			if name == "three tables" && (len(rs.Tables) != 3 || !strings.Contains(rs.Text(), "{ ")) {
				t.Fatalf("the configuration gives tables %d and no set:\n%s", len(rs.Tables), rs.Text())
			}
			var out string
			unchangedBy(t, n, func() {
				if out, err = a.Live(ctx, h, "pod", cfg); err != nil {
					t.Fatal(err)
				}
			})
			t.Logf("Live:\n%s", out)
			wantModel(t, out, rs)
			if strings.Contains(out, "#") {
				t.Fatalf("a marker or note in the listing of the configuration's own rules:\n%s", out)
			}
		})
	}
}

// TestLiveMarksRulesNotInTheConfiguration: rules added with nft to one of our chains (before and
// after the model's) are listed as the marker with their expressions, in their places, the
// model's rules between them still as text; a
// dormant table says so; without a configuration every rule is a marker and no text is guessed.
// Live changes nothing.
func TestLiveMarksRulesNotInTheConfiguration(t *testing.T) {
	requireNft(t)
	a, ctx := NewApplier(), context.Background()
	cfg := rules.Default()
	n, h, rs := appliedNetns(t, a, cfg)
	var output *Chain
	for _, c := range rs.Table(TableNat).Chains {
		if c.Name == chainOutput {
			output = c
		}
	}
	if output == nil || len(output.Rules) == 0 {
		t.Fatalf("the model has no rules in nat output:\n%s", rs.Text())
	}
	// One before the model's rules (where the model has a rule of its own) and one after them.
	n.Run(t, "nft", "insert", "rule", "inet", TableNat, chainOutput, "meta", "l4proto", "udp", "counter", "accept")
	n.Run(t, "nft", "add", "rule", "inet", TableNat, chainOutput, "counter", "drop")
	n.Run(t, "nft", "add", "table", "inet", TableNat, "{", "flags", "dormant", ";", "}")

	var out string
	var err error
	unchangedBy(t, n, func() {
		if out, err = a.Live(ctx, h, "pod", cfg); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("Live:\n%s", out)
	marker := "\t\t# rule not in the configuration's rule set: expressions meta, cmp, counter, immediate\n"
	marker2 := "\t\t# rule not in the configuration's rule set: expressions counter, immediate\n"
	block := chainBlock(t, out, TableNat, chainOutput)
	var want strings.Builder
	want.WriteString("\t\ttype nat hook output priority -100; policy accept;\n" + marker)
	for _, r := range output.Rules {
		want.WriteString("\t\t" + r.Text() + "\n")
	}
	want.WriteString(marker2)
	if block != want.String() {
		t.Fatalf("chain output:\n%s\nwant:\n%s", block, want.String())
	}
	if strings.Count(out, "# rule") != 2 {
		t.Fatalf("%d markers, want 2:\n%s", strings.Count(out, "# rule"), out)
	}
	if !strings.HasPrefix(out, "table inet "+TableNat+" {\n\tflags dormant\n\tchain ") {
		t.Fatalf("the dormant table is not said to be:\n%s", out)
	}

	// No configuration: nothing is compared, every rule (the model's and the foreign one) is a
	// marker with its expressions, and no rule text appears.
	unchangedBy(t, n, func() {
		if out, err = a.Live(ctx, h, "pod", nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("Live without a configuration:\n%s", out)
	total := 2
	for _, c := range rs.Table(TableNat).Chains {
		total += len(c.Rules)
		for _, r := range c.Rules {
			if strings.Contains(out, "\t\t"+r.Text()+"\n") {
				t.Fatalf("rule text %q without a configuration:\n%s", r.Text(), out)
			}
		}
	}
	if got := strings.Count(out, "\t\t# rule not in the configuration's rule set: expressions "); got != total {
		t.Fatalf("%d markers, want one per rule (%d):\n%s", got, total, out)
	}
	if !strings.Contains(out, marker) || !strings.Contains(out, marker2) || !strings.HasPrefix(out, "# no valid configuration") {
		t.Fatalf("without a configuration: no marker of the foreign rule, or no note:\n%s", out)
	}
}

// brokenNS is a namespace that cannot be entered.
type brokenNS struct{}

func (brokenNS) Do(func() error) error { return errors.New("setns: bad file descriptor") }
func (brokenNS) Path() string          { return "/run/netns/gone" }

// TestLiveWithoutOurTables: a fresh namespace, and one holding only someone else's inet table
// and iptables rules, list as one line saying so, and the listing creates nothing; a namespace
// that cannot be entered is an error naming it.
func TestLiveWithoutOurTables(t *testing.T) {
	requireNft(t)
	a, ctx := NewApplier(), context.Background()
	fresh, other := testutil.NewNetns(t), testutil.NewNetns(t)
	other.Run(t, "nft", "add", "table", "inet", "filter")
	other.Run(t, "nft", "add", "chain", "inet", "filter", "input", "{", "type", "filter", "hook", "input", "priority", "0", ";", "}")
	other.Run(t, "nft", "add", "rule", "inet", "filter", "input", "counter", "accept")
	other.Run(t, "iptables-nft", "-t", "nat", "-N", "ISTIO_OUTPUT")
	for name, n := range map[string]*testutil.Netns{"fresh": fresh, "other tables": other} {
		t.Run(name, func(t *testing.T) {
			h := openNS(t, n)
			for _, cfg := range []*rules.Config{rules.Default(), nil} {
				var out string
				var err error
				unchangedBy(t, n, func() { out, err = a.Live(ctx, h, "pod", cfg) })
				if err != nil {
					t.Fatal(err)
				}
				want := "# no tables of ours (inet istio-proxy-nat, istio-proxy-mangle, istio-proxy-raw)\n"
				if cfg == nil {
					want = "# no valid configuration: no rule is compared with a rule set\n" + want
				}
				if out != want {
					t.Fatalf("config %v: Live = %q, want %q", cfg != nil, out, want)
				}
			}
			if name == "fresh" {
				if ruleset := n.Run(t, "nft", "list", "ruleset"); ruleset != "" {
					t.Fatalf("listing a fresh namespace created:\n%s", ruleset)
				}
			}
		})
	}
	_, err := a.Live(ctx, brokenNS{}, "pod", rules.Default())
	if err == nil || !strings.Contains(err.Error(), "network namespace /run/netns/gone") || !strings.Contains(err.Error(), "bad file descriptor") {
		t.Fatalf("Live of a namespace that cannot be entered: %v, want an error naming it", err)
	}
}

// TestLiveSetsUnreadable: a set of someone else's in our table that is not a port set (readState
// fails on it, as Verify does) does not fail the listing: the rules with a lookup are listed as
// not compared, with the reason, the others still as the model's text.
func TestLiveSetsUnreadable(t *testing.T) {
	requireNft(t)
	a, ctx := NewApplier(), context.Background()
	cfg := config(rules.ModeRedirect, false)
	cfg.RedirectDNS, cfg.DNSServersV4 = true, []string{"10.96.0.10"} // tcp dport != { 53, 15008 }
	n := testutil.NewNetns(t)
	h := openNS(t, n)
	if _, err := a.Apply(ctx, h, "pod", cfg); err != nil {
		t.Fatal(err)
	}
	n.Run(t, "nft", "add", "set", "inet", TableNat, "addrs", "{", "type", "ipv4_addr", ";", "elements", "=", "{", "10.0.0.1", "}", ";", "}")
	ruleset := n.Run(t, "nft", "list", "ruleset") // readState fails on the set
	out, err := a.Live(ctx, h, "pod", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Live:\n%s", out)
	if after := n.Run(t, "nft", "list", "ruleset"); after != ruleset {
		t.Fatalf("Live changed the ruleset:\nbefore:\n%s\nafter:\n%s", ruleset, after)
	}
	rs, err := Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lookups, others := 0, 0
	for _, c := range rs.Table(TableNat).Chains {
		for _, r := range c.Rules {
			if strings.Contains(r.Text(), "{ ") {
				lookups++
			} else if others++; !strings.Contains(out, "\t\t"+r.Text()+"\n") {
				t.Fatalf("rule %q not listed as text:\n%s", r.Text(), out)
			}
		}
	}
	notCompared := "\t\t# rule not compared with the configuration's rule set (read the sets of table inet istio-proxy-nat: set addrs: element of 4 bytes, not a port): expressions "
	if lookups == 0 || others == 0 || strings.Count(out, notCompared) != lookups || strings.Count(out, "# rule") != lookups {
		t.Fatalf("%d rules with a lookup, want each listed as %q:\n%s", lookups, notCompared, out)
	}
}

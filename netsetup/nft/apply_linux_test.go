package nft

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

func config(mode rules.Mode, ipv6 bool) *rules.Config {
	c := rules.Default()
	c.InterceptionMode, c.EnableIPv6 = mode, ipv6
	return c
}

// TestConfigChangesLeaveNothingBehind moves one namespace through REDIRECT, TPROXY with IPv6,
// exclusions and DNS capture, and NONE: after each apply the live tables equal the model, tables
// the new configuration does not use are gone, and the TPROXY routes come and go with the mode.
func TestConfigChangesLeaveNothingBehind(t *testing.T) {
	testutil.RequireRoot(t)
	a, ctx := NewApplier(), context.Background()
	n := testutil.NewNetns(t)
	h := openNS(t, n)
	dns := config(rules.ModeRedirect, false)
	dns.RedirectDNS, dns.DNSServersV4, dns.OutboundPortsExclude = true, []string{"10.96.0.10"}, []uint16{15020, 3306}
	steps := []struct {
		name   string
		cfg    *rules.Config
		tables string
		rule   string // present in ip rule list
	}{
		{"redirect", config(rules.ModeRedirect, false), "istio-proxy-nat", ""},
		{"tproxy-ipv6", config(rules.ModeTProxy, true), "istio-proxy-mangle istio-proxy-nat", "lookup 133"},
		{"dns", dns, "istio-proxy-nat istio-proxy-raw", ""},
		{"none", config(rules.ModeNone, false), "", ""},
	}
	for _, s := range steps {
		res, err := a.Apply(ctx, h, "pod", s.cfg)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !res.Changed {
			t.Errorf("%s: apply reported no change", s.name)
		}
		if _, err := a.Verify(ctx, h, "pod", s.cfg); err != nil {
			t.Fatalf("%s: verify: %v", s.name, err)
		}
		var names []string
		for _, tb := range liveState(t, h) {
			names = append(names, tb.Name)
		}
		if got := strings.Join(sortedCopy(names), " "); got != s.tables {
			t.Errorf("%s: tables %q, want %q", s.name, got, s.tables)
		}
		if ip := n.Run(t, "ip", "rule", "list"); (s.rule != "") != strings.Contains(ip, "lookup 133") {
			t.Errorf("%s: ip rule list:\n%s", s.name, ip)
		}
		programmed, err := a.Programmed(ctx, h, "pod")
		if err != nil || programmed != (s.tables != "") {
			t.Errorf("%s: Programmed = %v, %v", s.name, programmed, err)
		}
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestDriftDetectedAndRepaired changes the live rules behind the applier's back in several ways;
// Verify reports each as drift naming the place, Apply repairs it, and a repaired namespace
// verifies again.
func TestDriftDetectedAndRepaired(t *testing.T) {
	requireNft(t)
	a, ctx := NewApplier(), context.Background()
	cfg := config(rules.ModeTProxy, true)
	drifts := map[string]struct {
		cmd  []string
		want string
	}{
		"rule deleted":  {[]string{"nft", "flush", "chain", "inet", "istio-proxy-nat", "istio-output"}, "chain istio-output: 0 rules"},
		"rule added":    {[]string{"nft", "add", "rule", "inet", "istio-proxy-nat", "istio-redirect", "counter"}, "chain istio-redirect: 2 rules"},
		"table gone":    {[]string{"nft", "delete", "table", "inet", "istio-proxy-mangle"}, "tables"},
		"foreign chain": {[]string{"nft", "add", "chain", "inet", "istio-proxy-nat", "extra"}, "chains"},
		"rule changed": {[]string{"sh", "-c", "nft flush chain inet istio-proxy-nat istio-in-redirect && " +
			"nft add rule inet istio-proxy-nat istio-in-redirect meta l4proto tcp counter redirect to :15007"}, "istio-in-redirect: rule 0 differs"},
		"route gone":    {[]string{"ip", "rule", "del", "fwmark", "1337", "lookup", "133"}, "IPv4"},
		"table dormant": {[]string{"nft", "add", "table", "inet", "istio-proxy-nat", "{", "flags", "dormant", ";", "}"}, "table inet istio-proxy-nat: flags"},
	}
	for name, d := range drifts {
		t.Run(name, func(t *testing.T) {
			n := testutil.NewNetns(t)
			h := openNS(t, n)
			if _, err := a.Apply(ctx, h, "pod", cfg); err != nil {
				t.Fatal(err)
			}
			n.Run(t, d.cmd...)
			_, err := a.Verify(ctx, h, "pod", cfg)
			if !errors.Is(err, netsetup.ErrDrift) || !strings.Contains(err.Error(), d.want) {
				t.Fatalf("verify after drift: %v, want ErrDrift naming %q", err, d.want)
			}
			res, err := a.Apply(ctx, h, "pod", cfg)
			if err != nil || !res.Changed {
				t.Fatalf("repair: changed=%v err=%v", res.Changed, err)
			}
			if _, err := a.Verify(ctx, h, "pod", cfg); err != nil {
				t.Fatalf("verify after repair: %v", err)
			}
		})
	}
}

// TestForeignRules: iptables rules of either backend in the namespace are reported with the
// reason, and probing a fresh namespace creates no legacy table.
func TestForeignRules(t *testing.T) {
	testutil.RequireRoot(t)
	a, ctx := NewApplier(), context.Background()
	cases := map[string]struct {
		cmd  []string
		want string
	}{
		"none":          {nil, ""},
		"iptables-nft":  {[]string{"iptables-nft", "-t", "nat", "-N", "ISTIO_OUTPUT"}, "iptables-nft chain ISTIO_OUTPUT in table ip nat"},
		"ip6tables-nft": {[]string{"ip6tables-nft", "-t", "mangle", "-N", "ISTIO_INBOUND"}, "iptables-nft chain ISTIO_INBOUND in table ip6 mangle"},
		"legacy":        {[]string{"iptables-legacy", "-t", "nat", "-N", "ISTIO_OUTPUT"}, "legacy ip table nat"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			n := testutil.NewNetns(t)
			h := openNS(t, n)
			if c.cmd != nil {
				n.Run(t, c.cmd...)
			}
			reason, err := a.Foreign(h)
			if err != nil {
				t.Fatal(err)
			}
			if (c.want == "") != (reason == "") || !strings.Contains(reason, c.want) {
				t.Fatalf("reason %q, want %q", reason, c.want)
			}
			found, err := a.ForeignRules(ctx, h, "pod")
			if err != nil || found != (c.want != "") {
				t.Fatalf("ForeignRules = %v, %v", found, err)
			}
			// Apply makes the same check in its own entry and writes nothing when it finds any.
			_, err = a.Apply(ctx, h, "pod", rules.Default())
			var fe *ForeignError
			if got := errors.As(err, &fe); got != (c.want != "") || (got && fe.Reason != reason) {
				t.Fatalf("Apply: %v, want a ForeignError %v with reason %q", err, c.want != "", reason)
			}
			if c.want == "" && err != nil {
				t.Fatal(err)
			}
			if programmed, err := a.Programmed(ctx, h, "pod"); err != nil || programmed != (c.want == "") {
				t.Fatalf("Programmed after Apply = %v, %v", programmed, err)
			}
			if c.cmd == nil {
				if names := n.Run(t, "cat", "/proc/net/ip_tables_names"); names != "" {
					t.Fatalf("probing created legacy tables: %q", names)
				}
			}
		})
	}
}

// TestGroupNamesRefused: owner-group names (Istio's OwnerGroupsInclude accepts them, nft resolves
// them in its own /etc/group) are refused with the name, and nothing is written.
func TestGroupNamesRefused(t *testing.T) {
	testutil.RequireRoot(t)
	a, ctx := NewApplier(), context.Background()
	n := testutil.NewNetns(t)
	h := openNS(t, n)
	cfg := rules.Default()
	cfg.OwnerGroups = rules.GroupFilter{Groups: []string{"java", "202"}}
	_, err := a.Apply(ctx, h, "pod", cfg)
	if err == nil || !strings.Contains(err.Error(), `owner "java": a numeric ID is required`) {
		t.Fatalf("apply: %v, want the group name refused", err)
	}
	if programmed, err := a.Programmed(ctx, h, "pod"); err != nil || programmed {
		t.Fatalf("Programmed = %v, %v after a refused apply", programmed, err)
	}
}

// TestStrayTProxyRoutingOnRedirectPod: the route check of a REDIRECT IPv4 pod (one rule dump) finds
// a TPROXY fwmark rule left in either family: drift, and Apply removes it with its local route. A
// local route in table 133 without the rule carries no traffic and is not looked for.
func TestStrayTProxyRoutingOnRedirectPod(t *testing.T) {
	testutil.RequireRoot(t)
	a, ctx := NewApplier(), context.Background()
	cfg := config(rules.ModeRedirect, false)
	for _, family := range []string{"-4", "-6"} {
		t.Run(family, func(t *testing.T) {
			n := testutil.NewNetns(t)
			h := openNS(t, n)
			if _, err := a.Apply(ctx, h, "pod", cfg); err != nil {
				t.Fatal(err)
			}
			n.Run(t, "ip", family, "route", "add", "local", "default", "dev", "lo", "table", "133")
			if _, err := a.Verify(ctx, h, "pod", cfg); err != nil {
				t.Fatalf("a route in table 133 without its rule: %v, want no drift", err)
			}
			n.Run(t, "ip", family, "rule", "add", "fwmark", "1337", "lookup", "133")
			_, err := a.Verify(ctx, h, "pod", cfg)
			if !errors.Is(err, netsetup.ErrDrift) || !strings.Contains(err.Error(), "TPROXY policy routing") {
				t.Fatalf("verify with a TPROXY rule left: %v, want ErrDrift naming the TPROXY policy routing", err)
			}
			if res, err := a.Apply(ctx, h, "pod", cfg); err != nil || !res.Changed {
				t.Fatalf("repair: changed=%v err=%v", res.Changed, err)
			}
			if _, err := a.Verify(ctx, h, "pod", cfg); err != nil {
				t.Fatalf("verify after repair: %v", err)
			}
			out := n.Run(t, "ip", family, "rule", "show")
			if strings.Contains(out, "fwmark") {
				t.Errorf("the TPROXY rule is still there:\n%s", out)
			}
			if out := n.Run(t, "ip", family, "route", "show", "table", "133"); strings.TrimSpace(out) != "" {
				t.Errorf("table 133 still holds:\n%s", out)
			}
		})
	}
}

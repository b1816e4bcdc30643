package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// prefixes returns n distinct prefixes: IPv4 /32s, or IPv6 /128s when v6.
func prefixes(n int, v6 bool) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range out {
		if v6 {
			out[i] = netip.MustParsePrefix(fmt.Sprintf("2001:db8::%x/128", i+1))
		} else {
			out[i] = netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.1/32", i/256, i%256))
		}
	}
	return out
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("net%d", i)
	}
	return out
}

// TestCountMatchesGenerate: Count agrees with Generate, per family, over every combination of the
// settings that change the number of rules.
func TestCountMatchesGenerate(t *testing.T) {
	includes := map[string]Ranges{
		"all": {All: true}, "none": {},
		"mixed":    {Prefixes: append(prefixes(3, false), prefixes(2, true)...)},
		"loopback": {Prefixes: []netip.Prefix{netip.MustParsePrefix("127.1.2.3/32")}},
	}
	inbound := map[string]Ports{"all": {All: true}, "none": {}, "two": {Ports: []uint16{80, 443}}}
	dns := map[string]func(*Config){
		"off": func(*Config) {},
		"all": func(c *Config) { c.RedirectDNS, c.CaptureAllDNS = true, true },
		"v4":  func(c *Config) { c.RedirectDNS, c.DNSServersV4 = true, []string{"10.0.0.10"} },
		"both": func(c *Config) {
			c.RedirectDNS, c.DNSServersV4, c.DNSServersV6 = true, []string{"10.0.0.10"}, []string{"fd00::a", "fd00::b"}
		},
		"no-servers": func(c *Config) { c.RedirectDNS = true },
	}
	n := 0
	for _, mode := range []Mode{ModeRedirect, ModeTProxy, ModeNone} {
		for _, ipv6 := range []bool{false, true} {
			for iname, inc := range includes {
				for pname, in := range inbound {
					for dname, setDNS := range dns {
						for _, lists := range []int{0, 2} {
							c := Default()
							c.InterceptionMode, c.EnableIPv6 = mode, ipv6
							c.OutboundIPRangesInclude, c.InboundPortsInclude = inc, in
							setDNS(c)
							c.ExcludeInterfaces, c.RerouteVirtualInterfaces = names(lists), names(lists)
							c.OutboundIPRangesExclude = prefixes(lists, lists%4 == 0)
							c.OutboundPortsInclude = make([]uint16, lists)
							c.ProxyUIDs = append(c.ProxyUIDs, make([]uint32, lists)...)
							c.OwnerGroups = GroupFilter{Except: lists == 0, Groups: names(lists)}
							c.DropInvalid = lists > 0
							rs, err := Generate(c)
							if err != nil {
								t.Fatal(err)
							}
							v4, v6 := Count(c)
							if v4 != len(rs.Rules(IPv4)) || v6 != len(rs.Rules(IPv6)) {
								t.Fatalf("%s ipv6=%t include=%s inbound=%s dns=%s lists=%d: Count %d/%d, Generate %d/%d",
									mode, ipv6, iname, pname, dname, lists, v4, v6, len(rs.Rules(IPv4)), len(rs.Rules(IPv6)))
							}
							n++
						}
					}
				}
			}
		}
	}
	t.Logf("%d configurations", n)
}

// TestListLimits: one element over a list's limit is refused, naming the list, its count and the
// limit; at the limit it is accepted.
func TestListLimits(t *testing.T) {
	cases := map[string]struct {
		limit int
		set   func(c *Config, n int)
	}{
		"OutboundIPRangesInclude": {MaxCIDRs, func(c *Config, n int) { c.OutboundIPRangesInclude = Ranges{Prefixes: prefixes(n, false)} }},
		"OutboundIPRangesExclude": {MaxCIDRs, func(c *Config, n int) { c.OutboundIPRangesExclude = prefixes(n, true) }},
		"InboundPortsInclude":     {MaxPorts, func(c *Config, n int) { c.InboundPortsInclude = Ports{Ports: make([]uint16, n)} }},
		"InboundPortsExclude":     {MaxPorts, func(c *Config, n int) { c.InboundPortsExclude = make([]uint16, n) }},
		"OutboundPortsInclude":    {MaxPorts, func(c *Config, n int) { c.OutboundPortsInclude = make([]uint16, n) }},
		"OutboundPortsExclude":    {MaxPorts, func(c *Config, n int) { c.OutboundPortsExclude = make([]uint16, n) }},
		"ExcludeInterfaces":       {MaxInterfaces, func(c *Config, n int) { c.ExcludeInterfaces = names(n) }},
		"RerouteVirtualInterfaces": {MaxInterfaces, func(c *Config, n int) {
			c.RerouteVirtualInterfaces = names(n)
		}},
		"ProxyUIDs":    {MaxIDs, func(c *Config, n int) { c.ProxyUIDs = make([]uint32, n) }},
		"ProxyGIDs":    {MaxIDs, func(c *Config, n int) { c.ProxyGIDs = make([]uint32, n) }},
		"OwnerGroups":  {MaxIDs, func(c *Config, n int) { c.OwnerGroups.Groups = names(n) }},
		"DNSServersV4": {MaxIDs, func(c *Config, n int) { c.DNSServersV4 = names(n) }},
		"DNSServersV6": {MaxIDs, func(c *Config, n int) { c.DNSServersV6 = names(n) }},
	}
	for field, tc := range cases {
		t.Run(field, func(t *testing.T) {
			c := Default()
			tc.set(c, tc.limit)
			if _, err := Generate(c); err != nil {
				t.Fatalf("at the limit: %v", err)
			}
			tc.set(c, tc.limit+1)
			_, err := Generate(c)
			var le *LimitError
			if !errors.As(err, &le) || !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("over the limit: got %v, want a *LimitError", err)
			}
			want := fmt.Sprintf("%s: %d elements, more than the limit of %d", field, tc.limit+1, tc.limit)
			if le.Field != field || le.Count != tc.limit+1 || le.Limit != tc.limit || err.Error() != want {
				t.Fatalf("got %q, want %q", err, want)
			}
		})
	}
}

// TestRuleLimit: exactly MaxRules rules are generated; one more is refused without generating,
// naming the largest lists.
func TestRuleLimit(t *testing.T) {
	c := Default()
	c.OutboundIPRangesInclude = Ranges{Prefixes: prefixes(250, false)}
	c.RerouteVirtualInterfaces = names(MaxInterfaces - 1)
	v4, _ := Count(c)
	c.OutboundIPRangesExclude = prefixes(MaxRules-v4, false)
	rs, err := Generate(c)
	if err != nil || len(rs.Rules(IPv4)) != MaxRules {
		t.Fatalf("at the limit: %v", err)
	}
	c.OutboundIPRangesExclude = prefixes(MaxRules-v4+1, false)
	var le *LimitError
	if _, err := Generate(c); !errors.As(err, &le) || le.Count != MaxRules+1 || le.Unit != "IPv4 rules" {
		t.Fatalf("over the limit: %v", err)
	}
	want := fmt.Sprintf("the configuration would generate %d IPv4 rules, more than the limit of %d "+
		"(largest lists: OutboundIPRangesInclude has 250 elements, OutboundIPRangesExclude has %d elements, "+
		"RerouteVirtualInterfaces has 31 elements)", MaxRules+1, MaxRules, MaxRules-v4+1)
	if le.Error() != want {
		t.Fatalf("got  %q\nwant %q", le.Error(), want)
	}

	// The product the limits exist for: every list at its limit.
	c.OutboundIPRangesInclude = Ranges{Prefixes: prefixes(MaxCIDRs, false)}
	c.OutboundIPRangesExclude = prefixes(MaxCIDRs, true)
	c.RerouteVirtualInterfaces = names(MaxInterfaces)
	c.EnableIPv6 = true
	allocs := testing.AllocsPerRun(10, func() {
		_, err := Generate(c)
		if !errors.As(err, &le) || le.Unit != "IPv4 rules" || le.Count < MaxCIDRs*(MaxInterfaces+1) ||
			!strings.Contains(err.Error(), "OutboundIPRangesInclude has 1024 elements") {
			t.Fatalf("every list at its limit: %v", err)
		}
	})
	if allocs > 32 { // the error and its message, never the rules (tens of thousands)
		t.Fatalf("refusing allocated %.0f times", allocs)
	}
}

package podconfig

import (
	"strconv"
	"strings"
	"testing"
)

// The fuzz targets check the parsers' contract on arbitrary input: no panic, and whatever is
// accepted is well-formed (what the generator may safely put on an iptables command line).

func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"", "*", "80", "80,443", " 8080, 9090 ", "80,", "0", "65536", "+1", "1,,2", "*,80"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, wildcard bool) {
		p, err := ParsePorts(s, wildcard)
		if err != nil {
			return
		}
		if p.All && (!wildcard || s != "*") {
			t.Fatalf("%q: wildcard accepted (allowed=%t)", s, wildcard)
		}
		for _, port := range p.Ports {
			if port == 0 {
				t.Fatalf("%q: port 0 accepted", s)
			}
		}
		if !p.All && strings.TrimSpace(s) != "" && len(p.Ports) != strings.Count(s, ",")+1 {
			t.Fatalf("%q: %d ports from %d elements", s, len(p.Ports), strings.Count(s, ",")+1)
		}
	})
}

func FuzzParseCIDRs(f *testing.F) {
	for _, s := range []string{"", "*", "10.0.0.0/8", "10.0.0.0/8,2001:db8::/32", "1.1.1.1", " 10.0.0.0/8", "10.0.0.0/8,", "::/0"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, wildcard bool) {
		r, err := ParseCIDRs(s, wildcard)
		if err != nil {
			return
		}
		if r.All && !wildcard {
			t.Fatalf("%q: wildcard accepted", s)
		}
		for _, p := range r.Prefixes {
			if !p.IsValid() || strings.ContainsAny(p.String(), " \t\n,") {
				t.Fatalf("%q: bad prefix %v", s, p)
			}
		}
	})
}

func FuzzParseInterfaces(f *testing.F) {
	for _, s := range []string{"", "eth0", "eth0,eth1", " eth0 ", "eth0,", "a/b", "x:1", "averyveryverylongname", "0a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		names, err := ParseInterfaces(s)
		if err != nil {
			return
		}
		for _, n := range names {
			if n == "" || len(n) > 15 || strings.ContainsAny(n, "/: \t\n,\x00") {
				t.Fatalf("%q: bad interface name %q accepted", s, n)
			}
		}
	})
}

func FuzzParseMode(f *testing.F) {
	for _, s := range []string{"REDIRECT", "TPROXY", "NONE", "redirect", "", " REDIRECT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMode(s)
		if err == nil && string(m) != s {
			t.Fatalf("%q parsed as %q", s, m)
		}
		if err == nil && s != "REDIRECT" && s != "TPROXY" && s != "NONE" {
			t.Fatalf("%q accepted", s)
		}
	})
}

func FuzzParseIDs(f *testing.F) {
	for _, s := range []string{"1337", "3,4", "", "-1", "4294967296"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids, err := parseIDs(s)
		if err != nil {
			return
		}
		for i, el := range strings.Split(s, ",") {
			if strconv.FormatUint(uint64(ids[i]), 10) != strings.TrimLeft(strings.TrimSpace(el), "0") && ids[i] != 0 {
				t.Fatalf("%q element %d: %d", s, i, ids[i])
			}
		}
	})
}

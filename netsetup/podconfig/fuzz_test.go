package podconfig

import (
	"errors"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
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

// Allocation bound of FuzzFromPodGenerate: FromPod, Generate and the rules' hash (which renders
// both payloads, as the controller does for every pod) together allocate at most
// allocBase + allocPerByte × the bytes of the annotation values. allocBase covers a pod without
// annotations (20-32 rules per family, 9-23 KB). allocPerByte: one input byte adds at most
// about 5 rules (an IPv6 CIDR such as "1::/8," is 6 bytes and is repeated for each of 32
// one-letter virtual interfaces, 33 rules) of about 270 bytes each (the rule, its arguments, its
// line in each payload), about 1350 bytes; 2048 leaves room. The limits cap the total besides
// (MaxRules per family: under 5 MB). Measured: 240 IPv6 CIDRs times 32 interfaces, 2 KB of
// annotations, 2.2 MB allocated, 1083 per byte.
const (
	allocBase    = 64 << 10
	allocPerByte = 2048
)

func FuzzFromPodGenerate(f *testing.F) {
	f.Add("", "", "", "", "", "", "", "", "", false)
	f.Add("TPROXY", "10.0.0.0/8,fd00::/8", "1.1.0.0/16", "80,443", "15021", "5000", "15020,22", "eth1", "k1,k2", true)
	f.Add("REDIRECT", "1::/8,2::/8,3::/8", "", "*", "", "", "", "", "a,b,c,d,e,f,g,h", true)
	f.Add("NONE", "*", "", "", "", "", "", "", "", false)
	f.Fuzz(func(t *testing.T, mode, include, exclude, inPorts, exInPorts, outPorts, exOutPorts, nics, virt string, ipv6 bool) {
		ann := map[string]string{}
		input := 0
		for key, v := range map[string]string{
			istioapi.AnnotationInterceptionMode: mode, istioapi.AnnotationIncludeOutboundIPRanges: include,
			istioapi.AnnotationExcludeOutboundIPRanges: exclude, istioapi.AnnotationIncludeInboundPorts: inPorts,
			istioapi.AnnotationExcludeInboundPorts: exInPorts, istioapi.AnnotationIncludeOutboundPorts: outPorts,
			istioapi.AnnotationExcludeOutboundPorts: exOutPorts, istioapi.AnnotationExcludeInterfaces: nics, istioapi.AnnotationRerouteVirtual: virt,
		} {
			if v != "" {
				ann[key] = v
				input += len(v)
			}
		}
		ip := "10.0.0.5"
		if ipv6 {
			ip = "fd00::5"
		}
		pod := meshPod(ann, ip)
		var cfg *rules.Config
		var rs *rules.RuleSet
		var err error
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if cfg, err = FromPod(pod); err == nil {
			if rs, err = rules.Generate(cfg); err == nil {
				_ = rs.Hash()
			}
		}
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > allocBase+allocPerByte*uint64(input) {
			t.Fatalf("%d bytes of annotations: %d bytes allocated, more than %d + %d per byte (err %v)",
				input, alloc, allocBase, allocPerByte, err)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		if v4, v6 := rules.Count(cfg); v4 != len(rs.Rules(rules.IPv4)) || v6 != len(rs.Rules(rules.IPv6)) ||
			v4 > rules.MaxRules || v6 > rules.MaxRules {
			t.Fatalf("rules.Count %d/%d, generated %d/%d", v4, v6, len(rs.Rules(rules.IPv4)), len(rs.Rules(rules.IPv6)))
		}
	})
}

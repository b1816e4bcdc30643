package iptablestest

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// targetOptions parses the options after "-j name" into canonical form. Table restrictions and
// jumps to chains are checked by the caller, which knows the table.
func targetOptions(fam rules.Family, name, proto string, args []string) ([]string, error) {
	opts := map[string]string{}
	order := []string{}
	for i := 0; i < len(args); i++ {
		o := args[i]
		if !strings.HasPrefix(o, "--") {
			return nil, refuse("Bad argument `%s'", o)
		}
		if o == "--to-port" || o == "--to" {
			o = "--to-ports"
		}
		v := ""
		if !slices.Contains([]string{"--save-mark", "--restore-mark", "--notrack"}, o) {
			if i+1 >= len(args) {
				return nil, refuse("option \"%s\" requires an argument", o)
			}
			i++
			v = args[i]
		}
		if _, dup := opts[o]; dup {
			return nil, refuse("%s: \"%s\" option cannot be used more than once", name, o)
		}
		opts[o] = v
		order = append(order, o)
	}
	allowed := map[string][]string{
		"ACCEPT": nil, "DROP": nil, "RETURN": nil,
		"REDIRECT": {"--to-ports"},
		"TPROXY":   {"--on-port", "--on-ip", "--tproxy-mark"},
		"MARK":     {"--set-mark", "--set-xmark"},
		"CONNMARK": {"--save-mark", "--restore-mark", "--nfmask", "--ctmask", "--mask"},
		"CT":       {"--zone", "--notrack"},
	}
	known, ok := allowed[name]
	if !ok {
		if unmodelled[name] {
			return nil, refuse("fake iptables: target %q is not modelled", name)
		}
		if len(args) > 0 { // a chain takes no options
			return nil, refuse("unknown option \"%s\"", args[0])
		}
		return nil, nil
	}
	for _, o := range order {
		if !slices.Contains(known, o) {
			return nil, refuse("unknown option \"%s\"", o)
		}
	}
	switch name {
	case "REDIRECT":
		p, ok := opts["--to-ports"]
		if !ok {
			return nil, nil
		}
		if proto != "tcp" && proto != "udp" {
			return nil, refuse("REDIRECT: Need TCP, UDP, SCTP or DCCP with port specification")
		}
		if err := checkPorts(strings.Replace(p, "-", ":", 1), ":"); err != nil {
			return nil, err
		}
		return []string{"--to-ports", p}, nil
	case "TPROXY":
		port, ok := opts["--on-port"]
		if !ok {
			return nil, refuse("TPROXY target: Parameter --on-port is required")
		}
		if err := checkPorts(port, ":"); err != nil || strings.Contains(port, ":") {
			return nil, refuse("TPROXY: Bad value for \"--on-port\" option: \"%s\"", port)
		}
		ip := "0.0.0.0"
		if fam == rules.IPv6 {
			ip = "::"
		}
		if v, ok := opts["--on-ip"]; ok {
			a, err := netip.ParseAddr(v)
			if err != nil || a.Is4() != (fam == rules.IPv4) {
				return nil, refuse("TPROXY: Bad value for \"--on-ip\" option: \"%s\"", v)
			}
			ip = a.String()
		}
		mark := "0x0/0x0"
		if v, ok := opts["--tproxy-mark"]; ok {
			m, err := parseMark(v, true)
			if err != nil {
				return nil, refuse("TPROXY: Bad value for \"--tproxy-mark\" option: \"%s\"", v)
			}
			mark = m
		}
		return []string{"--on-port", port, "--on-ip", ip, "--tproxy-mark", mark}, nil
	case "MARK":
		if len(opts) != 1 {
			return nil, refuse("MARK target: exactly one of --set-mark, --set-xmark is required")
		}
		for o, v := range opts {
			val, mask, err := markParts(v)
			if err != nil {
				return nil, refuse("MARK: Bad value for \"%s\" option: \"%s\"", o, v)
			}
			if o == "--set-mark" {
				mask |= val // xt_MARK revision 2: --set-mark v/m is --set-xmark v/(v|m)
			}
			return []string{"--set-xmark", fmt.Sprintf("0x%x/0x%x", val, mask)}, nil
		}
	case "CONNMARK":
		_, save := opts["--save-mark"]
		_, restore := opts["--restore-mark"]
		if save == restore {
			return nil, refuse("CONNMARK target: exactly one of --save-mark, --restore-mark is required (the fake models no other)")
		}
		nf, ct := "0xffffffff", "0xffffffff"
		for o, v := range opts {
			if o == "--save-mark" || o == "--restore-mark" {
				continue
			}
			n, err := strconv.ParseUint(v, 0, 32)
			if err != nil {
				return nil, refuse("CONNMARK: Bad value for \"%s\" option: \"%s\"", o, v)
			}
			h := fmt.Sprintf("0x%x", n)
			switch o {
			case "--nfmask":
				nf = h
			case "--ctmask":
				ct = h
			case "--mask":
				nf, ct = h, h
			}
		}
		verb := "--save-mark"
		if restore {
			verb = "--restore-mark"
		}
		return []string{verb, "--nfmask", nf, "--ctmask", ct}, nil
	case "CT":
		if _, ok := opts["--notrack"]; ok {
			return []string{"--notrack"}, nil
		}
		if z, ok := opts["--zone"]; ok {
			if _, err := strconv.ParseUint(z, 10, 16); err != nil {
				return nil, refuse("CT: Bad value for \"--zone\" option: \"%s\"", z)
			}
			return []string{"--zone", z}, nil
		}
	}
	return nil, nil
}

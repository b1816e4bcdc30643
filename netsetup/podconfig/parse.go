package podconfig

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// The grammars below are those of Istio's sidecar CNI (cni/pkg/plugin/sidecar_redirect.go), made
// strict where Istio would accept a value and then install broken or no rules.

// ParsePorts parses a comma-separated port list: spaces around each port are allowed, an empty
// string is an empty list, an empty element ("80,") is not, and ports are 1-65535. "*" is the
// wildcard only when wildcard is true (elsewhere Istio accepts it and then fails in iptables).
func ParsePorts(s string, wildcard bool) (rules.Ports, error) {
	if s == "*" {
		if !wildcard {
			return rules.Ports{}, fmt.Errorf(`"*" is not allowed here: list ports (1-65535) separated by commas`)
		}
		return rules.Ports{All: true}, nil
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return rules.Ports{}, nil
	}
	var ports []uint16
	for i, el := range strings.Split(s, ",") {
		p, err := parsePort(el)
		if err != nil {
			return rules.Ports{}, fmt.Errorf("element %d %s: %v", i+1, quote(el), err)
		}
		ports = append(ports, p)
	}
	return rules.Ports{Ports: ports}, nil
}

func parsePort(el string) (uint16, error) {
	el = strings.TrimSpace(el)
	if el == "" {
		return 0, fmt.Errorf("empty element (remove the extra comma)")
	}
	n, err := strconv.ParseUint(el, 10, 16)
	if err != nil || n == 0 || el[0] == '+' {
		return 0, fmt.Errorf("not a port number 1-65535")
	}
	return uint16(n), nil
}

// ParseCIDRs parses a comma-separated CIDR list (IPv4 or IPv6 prefixes, no spaces, as Istio's
// netip.ParsePrefix takes them). An empty string is an empty list; "*" is the wildcard only when
// wildcard is true.
func ParseCIDRs(s string, wildcard bool) (rules.Ranges, error) {
	if s == "*" {
		if !wildcard {
			return rules.Ranges{}, fmt.Errorf(`"*" is not allowed here: list CIDRs separated by commas`)
		}
		return rules.Ranges{All: true}, nil
	}
	if s == "" {
		return rules.Ranges{}, nil
	}
	var out []netip.Prefix
	for i, el := range strings.Split(s, ",") {
		p, err := netip.ParsePrefix(el)
		if err != nil {
			reason := "not a CIDR such as 10.0.0.0/8 or 2001:db8::/32"
			if el == "" {
				reason = "empty element (remove the extra comma)"
			} else if strings.TrimSpace(el) != el {
				reason = "spaces are not allowed around CIDRs"
			}
			return rules.Ranges{}, fmt.Errorf("element %d %s: %s", i+1, quote(el), reason)
		}
		out = append(out, p)
	}
	return rules.Ranges{Prefixes: out}, nil
}

var interfaceName = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_.\-]*$`)

// ParseInterfaces parses a comma-separated list of Linux interface names (1-15 characters, a
// letter first, then letters, digits, '_', '.', '-'; spaces around names are allowed).
func ParseInterfaces(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	var out []string
	for i, el := range strings.Split(s, ",") {
		name := strings.TrimSpace(el)
		switch {
		case name == "":
			return nil, fmt.Errorf("element %d: empty interface name", i+1)
		case len(name) > 15:
			return nil, fmt.Errorf("element %d %s: interface names have at most 15 characters", i+1, quote(name))
		case !interfaceName.MatchString(name):
			return nil, fmt.Errorf("element %d %s: not an interface name (a letter, then letters, digits, '_', '.', '-'; no '/', ':' or spaces)", i+1, quote(name))
		}
		out = append(out, name)
	}
	return out, nil
}

// ParseMode parses an interception mode: REDIRECT, TPROXY or NONE, exactly.
func ParseMode(s string) (rules.Mode, error) {
	switch m := rules.Mode(s); m {
	case rules.ModeRedirect, rules.ModeTProxy, rules.ModeNone:
		return m, nil
	}
	return "", fmt.Errorf("want REDIRECT, TPROXY or NONE")
}

// parseIDs parses a comma-separated list of numeric user or group IDs.
func parseIDs(s string) ([]uint32, error) {
	var out []uint32
	for i, el := range strings.Split(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(el), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("element %d %s: not a numeric ID", i+1, quote(el))
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

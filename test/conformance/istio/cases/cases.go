// Package cases reads the config-level conformance cases (cases.json next to Istio's goldens:
// a base of Istio's tools/common/config.Config fields and, per case, the fields it sets) into
// rules.Config values, reading each field the way istio-iptables takes it.
package cases

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// Case is one golden case.
type Case struct {
	Name   string
	Golden string // path of the golden file
	Config *rules.Config
}

// Load reads dir/cases.json.
func Load(dir string) ([]Case, error) {
	var file struct {
		Base  map[string]any `json:"base"`
		Cases []struct {
			Name   string         `json:"name"`
			Golden string         `json:"golden"`
			Set    map[string]any `json:"set"`
		} `json:"cases"`
	}
	path := filepath.Join(dir, "cases.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &file); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make([]Case, 0, len(file.Cases))
	for _, tc := range file.Cases {
		fields := map[string]any{}
		for k, v := range file.Base {
			fields[k] = v
		}
		for k, v := range tc.Set {
			fields[k] = v
		}
		cfg, err := Config(fields)
		if err != nil {
			return nil, fmt.Errorf("%s: case %s: %w", path, tc.Name, err)
		}
		out = append(out, Case{Name: tc.Name, Golden: filepath.Join(dir, tc.Golden), Config: cfg})
	}
	return out, nil
}

// Config reads Istio's config-level fields (strings as istio-iptables takes them: comma lists
// whose empty elements are dropped, "" meaning none; booleans; DNS server lists).
func Config(fields map[string]any) (*rules.Config, error) {
	cfg := &rules.Config{InterceptionMode: rules.ModeRedirect}
	var ownerInclude, ownerExclude string
	for k, raw := range fields {
		s, _ := raw.(string)
		if err := set(cfg, k, raw, s, &ownerInclude, &ownerExclude); err != nil {
			return nil, fmt.Errorf("%s=%v: %w", k, raw, err)
		}
	}
	// Istio's ParseInterceptFilter.
	if ownerInclude == "*" {
		cfg.OwnerGroups = rules.GroupFilter{Except: true, Groups: nonEmpty(ownerExclude)}
	} else {
		cfg.OwnerGroups = rules.GroupFilter{Groups: nonEmpty(ownerInclude)}
	}
	return cfg, nil
}

func set(cfg *rules.Config, k string, raw any, s string, ownerInclude, ownerExclude *string) error {
	list := strings.Join(nonEmpty(s), ",")
	var err error
	switch k {
	case "DryRun":
	case "ProxyPort":
		cfg.ProxyPort, err = onePort(s)
	case "InboundCapturePort":
		cfg.InboundCapturePort, err = onePort(s)
	case "InboundTunnelPort":
		cfg.InboundTunnelPort, err = onePort(s)
	case "ProxyUID":
		cfg.ProxyUIDs, err = ids(s)
	case "ProxyGID":
		cfg.ProxyGIDs, err = ids(s)
	case "InboundTProxyMark":
		var v []uint32
		if v, err = ids(s); err == nil {
			cfg.TProxyMark = v[0]
		}
	case "InboundTProxyRouteTable":
		cfg.TProxyRouteTable, err = strconv.Atoi(s)
	case "InboundInterceptionMode":
		cfg.InterceptionMode, err = podconfig.ParseMode(s)
	case "InboundPortsInclude":
		cfg.InboundPortsInclude, err = podconfig.ParsePorts(list, true)
	case "InboundPortsExclude":
		cfg.InboundPortsExclude, err = ports(list)
	case "OutboundPortsInclude":
		cfg.OutboundPortsInclude, err = ports(list)
	case "OutboundPortsExclude":
		cfg.OutboundPortsExclude, err = ports(list)
	case "OutboundIPRangesInclude":
		cfg.OutboundIPRangesInclude, err = podconfig.ParseCIDRs(list, true)
	case "OutboundIPRangesExclude":
		var r rules.Ranges
		r, err = podconfig.ParseCIDRs(list, false)
		cfg.OutboundIPRangesExclude = r.Prefixes
	case "ExcludeInterfaces":
		cfg.ExcludeInterfaces, err = podconfig.ParseInterfaces(list)
	case "RerouteVirtualInterfaces":
		cfg.RerouteVirtualInterfaces, err = podconfig.ParseInterfaces(list)
	case "RedirectDNS", "CaptureAllDNS", "DropInvalid", "EnableIPv6":
		b, ok := raw.(bool)
		if !ok {
			return fmt.Errorf("want a boolean")
		}
		*map[string]*bool{"RedirectDNS": &cfg.RedirectDNS, "CaptureAllDNS": &cfg.CaptureAllDNS,
			"DropInvalid": &cfg.DropInvalid, "EnableIPv6": &cfg.EnableIPv6}[k] = b
	case "DNSServersV4", "DNSServersV6":
		list, ok := raw.([]any)
		if !ok {
			return fmt.Errorf("want a list of addresses")
		}
		for _, a := range list {
			addr, _ := a.(string)
			if k == "DNSServersV4" {
				cfg.DNSServersV4 = append(cfg.DNSServersV4, addr)
			} else {
				cfg.DNSServersV6 = append(cfg.DNSServersV6, addr)
			}
		}
	case "OwnerGroupsInclude":
		*ownerInclude = s
	case "OwnerGroupsExclude":
		*ownerExclude = s
	case "HostIPv4LoopbackCidr":
		cfg.HostIPv4LoopbackCIDR, err = netip.ParsePrefix(s)
	default:
		return fmt.Errorf("unknown Istio config field")
	}
	return err
}

func onePort(s string) (uint16, error) {
	p, err := ports(s)
	if err == nil && len(p) != 1 {
		err = fmt.Errorf("want one port")
	}
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

func ports(s string) ([]uint16, error) {
	p, err := podconfig.ParsePorts(s, false)
	return p.Ports, err
}

func ids(s string) ([]uint32, error) {
	var out []uint32
	for _, el := range nonEmpty(s) {
		n, err := strconv.ParseUint(el, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("id %q: %w", el, err)
		}
		out = append(out, uint32(n))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no id")
	}
	return out, nil
}

func nonEmpty(s string) []string {
	var out []string
	for _, el := range strings.Split(s, ",") {
		if el != "" {
			out = append(out, el)
		}
	}
	return out
}

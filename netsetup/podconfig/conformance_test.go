package podconfig

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// conformanceDir holds Istio's golden rule files (test/conformance/istio).
var conformanceDir = filepath.Join("..", "..", "test", "conformance", "istio")

// TestCaptureConformance reproduces every golden of capture/cases.json: Istio's config-level
// cases (base + set), IPv4 payload followed by the IPv6 payload.
func TestCaptureConformance(t *testing.T) {
	var file struct {
		Base  map[string]any `json:"base"`
		Cases []struct {
			Name   string         `json:"name"`
			Golden string         `json:"golden"`
			Set    map[string]any `json:"set"`
		} `json:"cases"`
	}
	readJSON(t, filepath.Join(conformanceDir, "capture", "cases.json"), &file)
	if len(file.Cases) != 27 {
		t.Fatalf("capture/cases.json lists %d cases, want 27", len(file.Cases))
	}
	for _, tc := range file.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			fields := map[string]any{}
			for k, v := range file.Base {
				fields[k] = v
			}
			for k, v := range tc.Set {
				fields[k] = v
			}
			cfg, err := istioConfig(fields)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := rules.Generate(cfg)
			if err != nil {
				t.Fatal(err)
			}
			checkCount(t, cfg, rs)
			got := rs.Payload(rules.IPv4) + rs.Payload(rules.IPv6)
			var want []string
			for _, line := range readLines(t, filepath.Join(conformanceDir, "capture", tc.Golden)) {
				if line != "iptables-save" && line != "ip6tables-save" {
					want = append(want, line)
				}
			}
			compareLines(t, want, got)
		})
	}
}

// TestCNIPluginConformance maps each pod of cni-plugin/cases.json through FromPod, as Istio's
// sidecar CNI does, and compares the IPv4 payload with the golden.
func TestCNIPluginConformance(t *testing.T) {
	var file struct {
		Cases []struct {
			Name            string            `json:"name"`
			Golden          string            `json:"golden"`
			Annotations     map[string]string `json:"annotations"`
			ProxyEnv        map[string]string `json:"proxyEnv"`
			ProxyRunAsUser  *int64            `json:"proxyRunAsUser"`
			ProxyRunAsGroup *int64            `json:"proxyRunAsGroup"`
		} `json:"cases"`
	}
	readJSON(t, filepath.Join(conformanceDir, "cni-plugin", "cases.json"), &file)
	if len(file.Cases) != 9 {
		t.Fatalf("cni-plugin/cases.json lists %d cases, want 9", len(file.Cases))
	}
	for _, tc := range file.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			proxy := corev1.Container{Name: ProxyContainer}
			for k, v := range tc.ProxyEnv {
				proxy.Env = append(proxy.Env, corev1.EnvVar{Name: k, Value: v})
			}
			if tc.ProxyRunAsUser != nil || tc.ProxyRunAsGroup != nil {
				proxy.SecurityContext = &corev1.SecurityContext{RunAsUser: tc.ProxyRunAsUser, RunAsGroup: tc.ProxyRunAsGroup}
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: tc.Name, Annotations: tc.Annotations},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "test"}, proxy}},
				Status:     corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "10.0.0.5"}}},
			}
			cfg, err := FromPod(pod)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := rules.Generate(cfg)
			if err != nil {
				t.Fatal(err)
			}
			checkCount(t, cfg, rs)
			compareLines(t, readLines(t, filepath.Join(conformanceDir, "cni-plugin", tc.Golden)), rs.Payload(rules.IPv4))
		})
	}
}

// istioConfig reads Istio's config-level fields (tools/common/config.Config, as strings the way
// istio-iptables takes them: comma lists whose empty elements are dropped, "" meaning none).
func istioConfig(fields map[string]any) (*rules.Config, error) {
	cfg := &rules.Config{InterceptionMode: rules.ModeRedirect, OwnerGroups: rules.GroupFilter{Except: true}}
	var ownerInclude, ownerExclude string
	var err error
	for k, raw := range fields {
		s, _ := raw.(string)
		list := strings.Join(splitNonEmpty(s), ",")
		switch k {
		case "DryRun":
		case "ProxyPort":
			err = onePort(s, &cfg.ProxyPort)
		case "InboundCapturePort":
			err = onePort(s, &cfg.InboundCapturePort)
		case "InboundTunnelPort":
			err = onePort(s, &cfg.InboundTunnelPort)
		case "ProxyUID":
			cfg.ProxyUIDs, err = parseIDs(s)
		case "ProxyGID":
			cfg.ProxyGIDs, err = parseIDs(s)
		case "InboundTProxyMark":
			var ids []uint32
			ids, err = parseIDs(s)
			if err == nil {
				cfg.TProxyMark = ids[0]
			}
		case "InboundTProxyRouteTable":
			_, err = fmt.Sscan(s, &cfg.TProxyRouteTable)
		case "InboundInterceptionMode":
			cfg.InterceptionMode, err = ParseMode(s)
		case "InboundPortsInclude":
			cfg.InboundPortsInclude, err = ParsePorts(list, true)
		case "InboundPortsExclude":
			var p rules.Ports
			p, err = ParsePorts(list, false)
			cfg.InboundPortsExclude = p.Ports
		case "OutboundPortsInclude":
			var p rules.Ports
			p, err = ParsePorts(list, false)
			cfg.OutboundPortsInclude = p.Ports
		case "OutboundIPRangesInclude":
			cfg.OutboundIPRangesInclude, err = ParseCIDRs(list, true)
		case "OutboundIPRangesExclude":
			var r rules.Ranges
			r, err = ParseCIDRs(list, false)
			cfg.OutboundIPRangesExclude = r.Prefixes
		case "ExcludeInterfaces":
			cfg.ExcludeInterfaces, err = ParseInterfaces(list)
		case "RerouteVirtualInterfaces":
			cfg.RerouteVirtualInterfaces, err = ParseInterfaces(list)
		case "RedirectDNS":
			cfg.RedirectDNS = raw.(bool)
		case "CaptureAllDNS":
			cfg.CaptureAllDNS = raw.(bool)
		case "DropInvalid":
			cfg.DropInvalid = raw.(bool)
		case "EnableIPv6":
			cfg.EnableIPv6 = raw.(bool)
		case "DNSServersV4", "DNSServersV6":
			for _, a := range raw.([]any) {
				if k == "DNSServersV4" {
					cfg.DNSServersV4 = append(cfg.DNSServersV4, a.(string))
				} else {
					cfg.DNSServersV6 = append(cfg.DNSServersV6, a.(string))
				}
			}
		case "OwnerGroupsInclude":
			ownerInclude = s
		case "OwnerGroupsExclude":
			ownerExclude = s
		case "HostIPv4LoopbackCidr":
			cfg.HostIPv4LoopbackCIDR, err = netip.ParsePrefix(s)
		default:
			return nil, fmt.Errorf("unknown Istio config field %q", k)
		}
		if err != nil {
			return nil, fmt.Errorf("%s=%q: %w", k, s, err)
		}
	}
	// Istio's ParseInterceptFilter.
	if ownerInclude == "*" {
		cfg.OwnerGroups = rules.GroupFilter{Except: true, Groups: splitNonEmpty(ownerExclude)}
	} else {
		cfg.OwnerGroups = rules.GroupFilter{Groups: splitNonEmpty(ownerInclude)}
	}
	return cfg, nil
}

// checkCount: the rule count the limits are checked on is the number of rules generated.
func checkCount(t *testing.T, cfg *rules.Config, rs *rules.RuleSet) {
	t.Helper()
	if v4, v6 := rules.Count(cfg); v4 != len(rs.Rules(rules.IPv4)) || v6 != len(rs.Rules(rules.IPv6)) {
		t.Fatalf("rules.Count %d/%d, generated %d/%d", v4, v6, len(rs.Rules(rules.IPv4)), len(rs.Rules(rules.IPv6)))
	}
}

func onePort(s string, dst *uint16) error {
	p, err := parsePort(s)
	*dst = p
	return err
}

func splitNonEmpty(s string) []string {
	var out []string
	for _, el := range strings.Split(s, ",") {
		if el != "" {
			out = append(out, el)
		}
	}
	return out
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(data), "\n"), "\n")
}

func compareLines(t *testing.T, want []string, got string) {
	t.Helper()
	gotLines := strings.Split(strings.TrimRight(got, "\n"), "\n")
	if got == "" {
		gotLines = nil
	}
	n := max(len(want), len(gotLines))
	for i := 0; i < n; i++ {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(gotLines) {
			g = gotLines[i]
		}
		if w != g {
			t.Fatalf("line %d differs:\n want %q\n  got %q\nfull output:\n%s", i+1, w, g, got)
		}
	}
}

package podconfig_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
	"github.com/redhat-cop/istio-pod-network-controller/test/conformance/istio/cases"
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
			cfg, err := cases.Config(fields)
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

// TestCNIPluginConformance maps each pod of cni-plugin/cases.json through podconfig.FromPod, as Istio's
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
			proxy := corev1.Container{Name: podconfig.ProxyContainer}
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
			cfg, err := podconfig.FromPod(pod)
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

// checkCount: the rule count the limits are checked on is the number of rules generated.
func checkCount(t *testing.T, cfg *rules.Config, rs *rules.RuleSet) {
	t.Helper()
	if v4, v6 := rules.Count(cfg); v4 != len(rs.Rules(rules.IPv4)) || v6 != len(rs.Rules(rules.IPv6)) {
		t.Fatalf("rules.Count %d/%d, generated %d/%d", v4, v6, len(rs.Rules(rules.IPv4)), len(rs.Rules(rules.IPv6)))
	}
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

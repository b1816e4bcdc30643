package chart

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// TestNativeNftables: the chart value nativeNftables sets the controller's --rules-backend and
// Istio's global.nativeNftables in the istiod values the chart prints, to the same backend; any
// other value than a boolean is refused by the schema.
func TestNativeNftables(t *testing.T) {
	for _, tc := range []struct {
		set     []string
		backend string
		native  bool
	}{
		{nil, "iptables", false},
		{[]string{"nativeNftables=false"}, "iptables", false},
		{[]string{"nativeNftables=true"}, "nftables", true},
	} {
		t.Run(tc.backend+strings.Join(tc.set, ","), func(t *testing.T) {
			objs := render(t, tc.set...)
			var ds appsv1.DaemonSet
			into(t, find(t, objs, "DaemonSet", release), &ds)
			args := ds.Spec.Template.Spec.Containers[0].Args
			var flags []string
			for _, a := range args {
				if strings.HasPrefix(a, "--rules-backend") {
					flags = append(flags, a)
				}
			}
			if want := []string{"--rules-backend=" + tc.backend}; !slices.Equal(flags, want) {
				t.Errorf("controller args %q: want exactly %q", flags, want)
			}
			text, _, _ := unstructured.NestedString(find(t, objs, "ConfigMap", release+"-istiod-values").Object, "data", "istiod-values.yaml")
			var values struct {
				Global map[string]any `json:"global"`
			}
			if err := yaml.Unmarshal([]byte(text), &values); err != nil {
				t.Fatalf("istiod values: %v\n%s", err, text)
			}
			if got, ok := values.Global["nativeNftables"].(bool); !ok || got != tc.native {
				t.Errorf("istiod values global.nativeNftables = %#v, want %v", values.Global["nativeNftables"], tc.native)
			}
		})
	}
	if _, err := runHelm(t, "template", release, chartDir(t), "--namespace", namespace, "--set-string", "nativeNftables=yes"); err == nil ||
		!strings.Contains(err.Error(), "nativeNftables") {
		t.Errorf("nativeNftables=yes: %v, want a schema error naming the value", err)
	}
}

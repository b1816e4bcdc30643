package chart

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestReleaseRecordValue: releaseRecord sets the controller's --release-record and, through the
// injection template in the istiod values, the wait container's (passed only when false, so that
// the wait container's arguments are unchanged by default).
func TestReleaseRecordValue(t *testing.T) {
	for _, tc := range []struct {
		values   []string
		flag     string
		template string
	}{
		{nil, "--release-record=true", "$releaseRecord := true"},
		{[]string{"releaseRecord=false"}, "--release-record=false", "$releaseRecord := false"},
	} {
		objs := render(t, tc.values...)
		var ds appsv1.DaemonSet
		into(t, find(t, objs, "DaemonSet", release), &ds)
		if args := ds.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, tc.flag) {
			t.Errorf("values %v: controller args %v lack %s", tc.values, args, tc.flag)
		}
		cm := find(t, objs, "ConfigMap", release+"-istiod-values")
		values, _, _ := unstructured.NestedString(cm.Object, "data", "istiod-values.yaml")
		if strings.Count(values, "$releaseRecord := ") != 1 || !strings.Contains(values, tc.template) {
			t.Errorf("values %v: the injection template does not set %q", tc.values, tc.template)
		}
	}
	_, err := runHelm(t, "template", release, chartDir(t), "--namespace", namespace, "--set", "releaseRecord=maybe")
	if err == nil || !strings.Contains(err.Error(), "releaseRecord") {
		t.Errorf("--set releaseRecord=maybe: %v, want an error naming releaseRecord", err)
	}
}

package chart

import (
	"context"
	"maps"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// TestDaemonSetArgsAreControllerFlags builds the controller and checks that every argument the
// chart passes to `istio-pod-network-controller run` is one of its flags (its --help lists them).
func TestDaemonSetArgsAreControllerFlags(t *testing.T) {
	dir := t.TempDir()
	if err := harness.GoBuild(context.Background(), dir, "./cmd/istio-pod-network-controller"); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "istio-pod-network-controller")
	// The usage goes to stderr; -help exits 0 or 2 depending on the flag package's handling.
	help, _ := exec.Command(bin, "run", "-help").CombinedOutput()
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z][a-z0-9-]*)`).FindAllStringSubmatch(string(help), -1) {
		known[m[1]] = true
	}
	if !known["node-name"] {
		t.Fatalf("cannot read the flags from `run -help`:\n%s", help)
	}

	for _, values := range [][]string{nil, openShiftValues, {"controller.extraArgs={--vmodule=reconcile=4}"}} {
		var ds appsv1.DaemonSet
		into(t, find(t, render(t, values...), "DaemonSet", release), &ds)
		cargs := ds.Spec.Template.Spec.Containers[0].Args
		if len(cargs) == 0 || cargs[0] != "run" {
			t.Fatalf("container args %q: want the run subcommand first", cargs)
		}
		for _, a := range cargs[1:] {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !strings.HasPrefix(a, "-") || !known[name] {
				t.Errorf("the chart passes %q, which `istio-pod-network-controller run` does not accept (its flags: %v)", a, slices.Sorted(maps.Keys(known)))
			}
		}
	}
}

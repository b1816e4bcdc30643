package chart

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

var update = flag.Bool("update", false, "rewrite the golden files (also: REFRESH_GOLDEN=true)")

// refreshGolden reports whether golden files are rewritten instead of compared.
func refreshGolden() bool { return *update || os.Getenv("REFRESH_GOLDEN") == "true" }

// The release every test renders, as the e2e harness installs it.
const (
	release   = harness.DefaultRelease
	namespace = harness.DefaultNamespace
)

// openShiftValues are the --set values of the OpenShift rendering: the SCC and SELinux type spc_t,
// plus the metrics Service and ServiceMonitor (OpenShift's user-workload monitoring uses the
// Prometheus Operator).
var openShiftValues = []string{"openshift.enabled=true", "metrics.service.enabled=true", "metrics.serviceMonitor.enabled=true"}

func sets(values []string) []string {
	var args []string
	for _, v := range values {
		args = append(args, "--set", v)
	}
	return args
}

var (
	rootOnce sync.Once
	root     string
	rootErr  error
	helmOnce sync.Once
	helmBin  string
	helmErr  error
)

func moduleRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() { root, rootErr = harness.ModuleRoot(context.Background()) })
	if rootErr != nil {
		t.Fatal(rootErr)
	}
	return root
}

func chartDir(t testing.TB) string { return filepath.Join(moduleRoot(t), harness.ChartPath) }

// helmPath builds helm on first use on this machine (a few minutes) and returns its path.
func helmPath(t testing.TB) string {
	t.Helper()
	helmOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		var dir string
		dir, helmErr = cluster.BuildTools(ctx, os.Stderr, "helm")
		helmBin = filepath.Join(dir, "helm")
	})
	if helmErr != nil {
		t.Fatalf("build helm with test/tools/build.sh: %v", helmErr)
	}
	return helmBin
}

// runHelm runs helm with throwaway configuration directories and returns its standard output; the
// error carries its standard error.
func runHelm(t testing.TB, args ...string) (string, error) {
	t.Helper()
	tmp := t.TempDir()
	cmd := exec.Command(helmPath(t), args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(tmp, "config"),
		"HELM_CACHE_HOME="+filepath.Join(tmp, "cache"),
		"HELM_DATA_HOME="+filepath.Join(tmp, "data"),
	)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// renderText runs `helm template` for the release with --set values and returns the manifest.
func renderText(t testing.TB, values ...string) string {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", release, chartDir(t), "--namespace", namespace}, sets(values)...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// render returns the rendered objects, as the e2e harness renders them.
func render(t testing.TB, values ...string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := harness.Render(context.Background(), helmPath(t), chartDir(t), release, namespace, values...)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// find returns the only object of that kind and name, failing the test otherwise.
func find(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	var found *unstructured.Unstructured
	for _, o := range harness.OfKind(objs, kind) {
		if o.GetName() == name {
			if found != nil {
				t.Fatalf("two %s objects named %q", kind, name)
			}
			found = o
		}
	}
	if found == nil {
		t.Fatalf("no %s named %q in the rendered chart", kind, name)
	}
	return found
}

// into converts an unstructured object into a typed one.
func into(t testing.TB, u *unstructured.Unstructured, out any) {
	t.Helper()
	b, err := u.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, out); err != nil {
		t.Fatalf("decode %s %q: %v", u.GetKind(), u.GetName(), err)
	}
}

// compareGolden compares got with the golden file (or rewrites it when refreshing).
func compareGolden(t testing.TB, path, got string) {
	t.Helper()
	if refreshGolden() {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", path)
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file: %v (create it with -update or REFRESH_GOLDEN=true)", err)
	}
	if string(want) != got {
		t.Errorf("%s is out of date: %s\nRefresh with: go test ./test/chart -run '%s' -update", filepath.Base(path), firstDifference(string(want), got), t.Name())
	}
}

// firstDifference describes where two texts first differ, by line.
func firstDifference(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g || i >= len(wl) || i >= len(gl) {
			return fmt.Sprintf("line %d: golden has %q, rendered has %q", i+1, w, g)
		}
	}
	return "no difference"
}

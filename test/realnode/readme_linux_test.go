package realnode

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// readmeSection is the README section whose first fenced block TestREADMETroubleshooting runs.
const readmeSection = "## Troubleshooting a pod that does not start"

// TestREADMETroubleshooting runs each command of the README's troubleshooting block verbatim (POD
// and NS replaced, through bash, kubectl pointing at the real node's API server) for a released pod
// and for a pod the controller refuses, and checks each succeeds and shows what the README says:
// the controller's annotations, its Event in `kubectl describe`, the controller's pod on the pod's
// node, and inspect's verdict from inside that pod (with the chart's /host mounts).
func TestREADMETroubleshooting(t *testing.T) {
	cluster.Require(t)
	testutil.RequireRoot(t)
	lines := readmeCommands(t)
	ctx := t.Context()
	work := t.TempDir()
	archives, err := BuildProjectImages(ctx, work, testLog{t})
	if err != nil {
		t.Fatalf("build the images: %v", err)
	}
	tools, err := cluster.BuildTools(ctx, testLog{t}, "kubectl")
	if err != nil {
		t.Fatal(err)
	}
	n := StartForTest(t, Options{Images: archives})
	if out, err := n.HelmInstall(ctx, "", release, controllerNS); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("helm install:\n%s", out)
	}
	n.waitPods(t, controllerNS, "the controller pod Ready", func(ps []corev1.Pod) bool { return len(ps) == 1 && podReady(&ps[0]) })
	n.meshNamespace(t)
	for name, ann := range map[string]map[string]string{
		"released": nil,
		"refused":  {"traffic.sidecar.istio.io/excludeOutboundPorts": "5432,postgres"},
	} {
		dep, err := MeshDeployment(ctx, meshNS, name, 1)
		if err != nil {
			t.Fatal(err)
		}
		if dep.Spec.Template.Annotations == nil {
			dep.Spec.Template.Annotations = map[string]string{}
		}
		for k, v := range ann {
			dep.Spec.Template.Annotations[k] = v
		}
		if _, err := n.Cluster.Client.AppsV1().Deployments(meshNS).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pods := n.waitPods(t, meshNS, "one pod released, one refused", func(ps []corev1.Pod) bool {
		st := map[string]string{}
		for i := range ps {
			if ps[i].Labels["app"] == "released" && released(&ps[i]) {
				st["released"] = "ok"
			}
			if ps[i].Labels["app"] == "refused" && ps[i].Annotations[contract.KeyStatus] == string(contract.StatusFailed) {
				st["refused"] = "ok"
			}
		}
		return len(ps) == 2 && len(st) == 2
	})

	for _, p := range pods {
		ok := p.Labels["app"] == "released"
		t.Run(p.Labels["app"], func(t *testing.T) {
			results := runREADME(t, lines, p.Name, p.Namespace, tools, n.Cluster.AdminKubeconfig)
			for i, line := range lines {
				checkREADMELine(t, line, results[i], ok, n.Name)
			}
		})
	}
}

// readmeCommands returns the lines of the first fenced block of the README's troubleshooting
// section.
func readmeCommands(t *testing.T) []string {
	root, err := harness.ModuleRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n"+readmeSection+"\n")
	if !ok {
		t.Fatalf("README.md has no section %q", readmeSection)
	}
	_, block, ok := strings.Cut(section, "\n```sh\n")
	if !ok {
		t.Fatalf("README.md section %q has no ```sh block", readmeSection)
	}
	block, _, _ = strings.Cut(block, "\n```")
	var lines []string
	for line := range strings.Lines(block) {
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	if len(lines) < 3 {
		t.Fatalf("README.md section %q: %d commands, want the annotations, describe and inspect at least", readmeSection, len(lines))
	}
	return lines
}

// readmeResult is one README line's combined output and exit code.
type readmeResult struct {
	out  string
	code int
}

var (
	podWord = regexp.MustCompile(`\bPOD\b`)
	nsWord  = regexp.MustCompile(`\bNS\b`)
)

// runREADME runs the lines in one bash, as a user pastes them (variables carry from line to line),
// with a marker after each line that records its exit code. pipefail makes a failing kubectl in a
// pipeline count.
func runREADME(t *testing.T, lines []string, pod, ns, tools, kubeconfig string) []readmeResult {
	var script strings.Builder
	script.WriteString("set -o pipefail\n")
	for i, line := range lines {
		line = nsWord.ReplaceAllString(podWord.ReplaceAllString(line, pod), ns)
		fmt.Fprintf(&script, "%s\necho \"@@readme-line %d exit $?\"\n", line, i)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Env = append(os.Environ(), "PATH="+tools+":"+os.Getenv("PATH"), "KUBECONFIG="+kubeconfig)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("bash: %v\n%s", err, out.String())
	}
	t.Logf("the README's commands for pod %s/%s:\n%s", ns, pod, out.String())
	results := make([]readmeResult, 0, len(lines))
	rest := out.String()
	for i := range lines {
		marker := regexp.MustCompile(fmt.Sprintf(`(?m)^@@readme-line %d exit (\d+)\n`, i))
		loc := marker.FindStringSubmatchIndex(rest)
		if loc == nil {
			t.Fatalf("line %d (%s): no exit marker in the output", i, lines[i])
		}
		var code int
		fmt.Sscan(rest[loc[2]:loc[3]], &code)
		results = append(results, readmeResult{out: rest[:loc[0]], code: code})
		rest = rest[loc[1]:]
	}
	return results
}

// checkREADMELine checks one line's result against what the README says it shows, for a released
// pod (ok) or a refused one.
func checkREADMELine(t *testing.T, line string, r readmeResult, ok bool, node string) {
	t.Helper()
	want, code, known := readmeExpectation(line, ok)
	if !known {
		t.Fatalf("README command %q: this test has no check for it; add one to readmeExpectation", line)
	}
	if r.code != code {
		t.Errorf("%s: exit %d, want %d:\n%s", line, r.code, code, r.out)
	}
	if len(want) == 0 && strings.TrimSpace(r.out) != "" {
		t.Errorf("%s: printed %q, want nothing", line, r.out)
	}
	for _, w := range want {
		if !strings.Contains(r.out, w) {
			t.Errorf("%s: output lacks %q (node %s):\n%s", line, w, node, r.out)
		}
	}
}

// readmeExpectation is what a README troubleshooting line shows and its exit code, for a released
// pod (ok) or a refused one; known is false for a line this test does not know (a new README
// command needs its check here).
func readmeExpectation(line string, ok bool) (want []string, code int, known bool) {
	const inContainer = "in the controller's container: its --host-proc=/host/proc --netns-dirs=/host/"
	switch {
	case strings.Contains(line, "{.metadata.annotations}"):
		if ok {
			return []string{`"pod-network-controller.istio.io/status":"ready"`, `"pod-network-controller.istio.io/netns":"cookie:`,
				`"pod-network-controller.istio.io/rules":`, `"pod-network-controller.istio.io/families":"ipv4"`}, 0, true
		}
		return []string{`"pod-network-controller.istio.io/status":"failed"`, `"pod-network-controller.istio.io/reason":`, "excludeOutboundPorts"}, 0, true
	case strings.Contains(line, "describe pod"):
		if ok {
			return []string{"istio-pod-network-controller", "Programmed", harness.WaitContainer, "Completed"}, 0, true
		}
		return []string{"istio-pod-network-controller", "InvalidConfiguration", "excludeOutboundPorts"}, 0, true
	case assignment.MatchString(line):
		return nil, 0, true // no output
	case strings.Contains(line, " inspect "):
		// From inside the controller's pod on the pod's node: the chart's /host mounts, found by
		// inspect itself; exit 4 is NOT PROGRAMMED.
		if ok {
			rec := "Release record: pnc1 status=ready netns=cookie:"
			if !RecordOn() {
				rec = "Release record: none"
			}
			return []string{inContainer, "Verdict:      OK", "Namespace:    cookie:", rec}, 0, true
		}
		return []string{inContainer, "NOT PROGRAMMED", "failed", "Release record: none"}, 4, true
	}
	return nil, 0, false
}

var assignment = regexp.MustCompile(`^[A-Z]+=\$\(`)

// TestREADMETroubleshootingKnown checks, without a node, that the README's troubleshooting block
// parses and that TestREADMETroubleshooting has a check for each of its commands.
func TestREADMETroubleshootingKnown(t *testing.T) {
	lines := readmeCommands(t)
	for _, line := range lines {
		if _, _, known := readmeExpectation(line, true); !known {
			t.Errorf("README command %q: TestREADMETroubleshooting has no check for it; add one to readmeExpectation", line)
		}
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "--field-selector spec.nodeName=") }) {
		t.Errorf("the README's commands do not pick the controller pod on the pod's node (--field-selector spec.nodeName=...):\n%s", strings.Join(lines, "\n"))
	}
}

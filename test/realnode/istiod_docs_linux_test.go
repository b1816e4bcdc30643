package realnode

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// The docs/install.md sections whose first ```sh block TestIstiodOnTheRealNode runs.
const (
	docNewMesh   = "### A new mesh: this chart, then istiod with its values"
	docFromInit  = "### From istio-init"
	docDowngrade = "### Back to istio-init (downgrade)"
	docUninstall = "## Uninstalling"
)

// installDoc is docs/install.md's text.
func installDoc(t *testing.T) string {
	t.Helper()
	root, err := harness.ModuleRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docCommands returns the commands of the first ```sh block of a docs/install.md section, one per
// command: a line ending in a backslash continues on the next.
func docCommands(t *testing.T, doc, heading string) []string {
	t.Helper()
	_, section, ok := strings.Cut(doc, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("docs/install.md has no section %q", heading)
	}
	if next := strings.Index(section, "\n#"); next >= 0 && next < strings.Index(section, "\n```sh\n") {
		t.Fatalf("docs/install.md section %q has no ```sh block before the next heading", heading)
	}
	_, block, ok := strings.Cut(section, "\n```sh\n")
	if !ok {
		t.Fatalf("docs/install.md section %q has no ```sh block", heading)
	}
	block, _, _ = strings.Cut(block, "\n```")
	var cmds []string
	var cur strings.Builder
	for line := range strings.Lines(block) {
		line = strings.TrimSpace(line)
		if c, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(c)
			continue
		}
		cur.WriteString(line)
		if s := strings.TrimSpace(cur.String()); s != "" {
			cmds = append(cmds, s)
		}
		cur.Reset()
	}
	if len(cmds) == 0 {
		t.Fatalf("docs/install.md section %q: empty ```sh block", heading)
	}
	return cmds
}

// docRun is what runDoc substitutes: the module's chart, Istio's charts, the namespace, and the
// values this node needs on each helm command of our chart and of istiod.
type docRun struct {
	n        *Node
	root     string // the module root
	charts   IstioCharts
	tools    string // kubectl, helm
	dir      string // the working directory (istiod-values.yaml lands there)
	t        *testing.T
	duration map[string]time.Duration
}

var (
	namespaceWord = regexp.MustCompile(`\bNAMESPACE\b`)
	helmOurs      = regexp.MustCompile(`^helm (install|upgrade) istio-pod-network-controller `)
	helmIstiod    = regexp.MustCompile(`^helm (install|upgrade) istiod `)
)

// substitute turns one documented command into the one run here: NAMESPACE, the charts' paths,
// and --set for the values of ChartOverrides and IstiodOverrides (docs/install.md lists them).
func (r *docRun) substitute(cmd, ns string) string {
	cmd = namespaceWord.ReplaceAllString(cmd, ns)
	cmd = strings.ReplaceAll(cmd, " charts/istio-pod-network-controller ", " "+filepath.Join(r.root, "charts", "istio-pod-network-controller")+" ")
	cmd = strings.ReplaceAll(cmd, " istio/base ", " "+r.charts.Base()+" ")
	cmd = strings.ReplaceAll(cmd, " istio/istiod ", " "+r.charts.Istiod()+" ")
	var set []string
	switch {
	case helmOurs.MatchString(cmd):
		set = r.n.ChartOverrides()
	case helmIstiod.MatchString(cmd):
		set = r.n.IstiodOverrides()
	}
	for _, v := range set {
		cmd += " --set " + v
	}
	return cmd
}

// run runs a section's commands in one bash (set -euo pipefail, so the first failing command
// fails the test), as a user pastes them, with kubectl and helm on PATH and the admin kubeconfig.
func (r *docRun) run(heading, ns string) {
	t := r.t
	t.Helper()
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for _, c := range docCommands(t, installDoc(t), heading) {
		script.WriteString("echo \"+ " + strings.ReplaceAll(c, `"`, `\"`) + "\"\n")
		script.WriteString(r.substitute(c, ns) + "\n")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Dir = r.dir
	cmd.Env = append(r.n.HelmEnv(), "PATH="+r.tools+":"+os.Getenv("PATH"), "KUBECONFIG="+r.n.Cluster.AdminKubeconfig)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	r.duration[heading] = time.Since(t0)
	if err != nil {
		t.Fatalf("docs/install.md %q (NAMESPACE=%s): %v\n%s", heading, ns, err, out.String())
	}
	t.Logf("docs/install.md %q (NAMESPACE=%s) in %s:\n%s", heading, ns, time.Since(t0).Round(time.Millisecond), out.String())
}

// TestInstallDocBlocks checks without a node that every section the real-node test runs has its
// block, and that the substitutions reach each helm command.
func TestInstallDocBlocks(t *testing.T) {
	doc := installDoc(t)
	r := &docRun{n: &Node{APIServerHost: "192.0.2.1", APIServerPort: "6443"}, root: "/m", charts: IstioCharts{Dir: "/istio/charts"}}
	helm := 0
	for _, h := range []string{docNewMesh, docFromInit, docDowngrade, docUninstall} {
		for _, c := range docCommands(t, doc, h) {
			got := r.substitute(c, "shop")
			if strings.Contains(got, "NAMESPACE") || strings.Contains(got, " istio/") {
				t.Errorf("%s: %q → %q: a placeholder is left", h, c, got)
			}
			if helmIstiod.MatchString(got) {
				helm++
				if !strings.Contains(got, " /istio/charts/istio-control/istio-discovery ") || !strings.Contains(got, "--set env.KUBERNETES_SERVICE_HOST=192.0.2.1") {
					t.Errorf("%s: %q → %q: want Istio's istiod chart and the overrides", h, c, got)
				}
			}
		}
	}
	if helm < 4 {
		t.Errorf("%d helm commands of istiod in the sections, want at least 4 (install, from istio-init, downgrade, uninstall)", helm)
	}
}

// diagnose logs what a failed run needs: the pods and Events of every namespace and istiod's log.
func (r *docRun) diagnose() {
	for _, args := range [][]string{
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"-n", "istio-system", "logs", "deployment/istiod", "--tail=60"},
		{"-n", "istio-system", "logs", "daemonset/istio-pod-network-controller", "--tail=40"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(r.tools, "kubectl"), append([]string{"--kubeconfig", r.n.Cluster.AdminKubeconfig}, args...)...)
		out, err := cmd.CombinedOutput()
		cancel()
		r.t.Logf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

package realnode

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// Helm runs helm with args against the node's API server (the admin kubeconfig), with helm's
// cache, configuration and data in the node's state directory, and returns its output.
func (n *Node) Helm(ctx context.Context, args ...string) ([]byte, error) {
	args = append(args, "--kubeconfig", n.Cluster.AdminKubeconfig)
	cmd := exec.CommandContext(ctx, filepath.Join(n.ToolsDir, "helm"), args...)
	cmd.Env = n.HelmEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// ChartDir is the module's charts/istio-pod-network-controller.
func ChartDir(ctx context.Context) (string, error) {
	root, err := harness.ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "charts", "istio-pod-network-controller"), nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/kubelet"
)

// The simulated node uses its own bridge and prefixes, so it can run next to the end-to-end tests.
const (
	bridge    = "pnc-demo0"
	podCIDRv4 = "10.246.0.1/16"
	podCIDRv6 = "fd00:246::1/64"
)

// simulatedNode runs the demo on the end-to-end tests' simulated node: the real controller binary
// as the chart's ServiceAccount would run it, the real wait binary in each pod's namespace.
func simulatedNode(ctx context.Context, p *progress, dir string, hold bool, detail io.Writer) error {
	p.m = 6
	p.step("the controller and wait binaries, kubectl (built on first use)")
	bins, err := harness.Build(ctx, filepath.Join(dir, "bin"))
	if err != nil {
		return err
	}
	tools, err := cluster.BuildTools(ctx, toolLog{detail}, "kubectl")
	if err != nil {
		return err
	}
	p.step("etcd and kube-apiserver (the first run builds them from the Go module proxy: about 15 minutes)")
	c, err := cluster.Start(ctx, cluster.Options{Log: toolLog{detail}})
	if err != nil {
		return err
	}
	defer c.Stop()
	p.say("control plane ready at %s", c.Host)

	p.step("the simulated node %s", c.NodeName)
	netnsDir := filepath.Join(dir, "netns")
	kl, err := kubelet.Start(ctx, kubelet.Options{Client: c.Client, WaitBinary: bins.Wait, StateDir: filepath.Join(dir, "node"),
		NetnsDir: netnsDir, Bridge: bridge, PodCIDRv4: podCIDRv4, PodCIDRv6: podCIDRv6, Log: detail})
	if err != nil {
		return err
	}
	defer kl.Stop()
	p.say("bridge %s (%s, %s), pod namespaces registered in %s", bridge, podCIDRv4, podCIDRv6, netnsDir)

	p.step("the Helm chart (rendered by helm): ServiceAccount, RBAC, admission policies; the controller as its DaemonSet pod would run")
	in, err := harness.InstallChart(ctx, c, harness.InstallOptions{Dir: dir, Log: detail})
	if err != nil {
		return err
	}
	ctrlLog := filepath.Join(dir, "controller.log")
	ctrl, err := harness.StartController(ctx, harness.ControllerOptions{
		Binary: bins.Controller, Kubeconfig: in.Kubeconfig, NodeName: c.NodeName, NetnsDirs: netnsDir,
		LockDir: filepath.Join(dir, "locks"), Args: []string{"-v=2"}, LogPath: ctrlLog,
	})
	if err != nil {
		return err
	}
	defer ctrl.Stop(10 * time.Second)
	p.say("controller running as %s (token bound to pod %s/%s), metrics at http://%s/metrics",
		in.User, in.Pod.Namespace, in.Pod.Name, ctrl.MetricsAddr)

	if _, err := c.EnsureNamespace(ctx, namespace, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}); err != nil {
		return err
	}
	pods := map[string][]harness.PodOption{
		inspected:       nil,
		"api":           {harness.DualStack()},
		"openshift-uid": {harness.WithProxyUID(1000670000)},
		refusedPod: {harness.WithAnnotations(map[string]string{
			"traffic.sidecar.istio.io/excludeOutboundPorts": "5432,postgres"})},
	}
	p.step("%d mesh pods in namespace %q (Pod Security: restricted); %q has a malformed annotation", len(pods), namespace, refusedPod)
	start := time.Now()
	for name, opts := range pods {
		if _, err := c.Client.CoreV1().Pods(namespace).Create(ctx, harness.MeshPod(namespace, name, c.NodeName, opts...), metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if err := follow(ctx, c.Client, start, len(pods), 2*time.Minute); err != nil {
		return fmt.Errorf("%w%s", err, ctrl.LogTail(20))
	}

	p.step("what an admin looks at")
	locks := filepath.Join(dir, "inspect-locks")
	a := admin{kubectl: filepath.Join(tools, "kubectl"), kubeconfig: c.AdminKubeconfig,
		inspect: func(ctx context.Context, ns, pod string) (string, *exec.Cmd, error) {
			// On the node itself: the host's /proc, the simulated node's namespace directory.
			args := []string{"--netns-dirs=" + netnsDir, "--lock-dir=" + locks, "-n", ns, pod}
			cmd := exec.CommandContext(ctx, bins.Controller, append([]string{"inspect", "--kubeconfig=" + c.AdminKubeconfig}, args...)...)
			return "istio-pod-network-controller inspect " + strings.Join(args, " "), cmd, nil
		}}
	if err := a.show(ctx, inspected, refusedPod); err != nil {
		return err
	}
	holdOn(ctx, p, hold, c.AdminKubeconfig, dir)
	p.say("stopping: controller, simulated node (namespaces, veths, bridge, cgroups), control plane")
	return nil
}

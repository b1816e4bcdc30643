// Command demo (`make demo`, as root) shows the whole flow on this machine: it starts a real
// kube-apiserver and etcd (building them on first use), a simulated node on real network
// namespaces, the Helm chart's RBAC and admission policies, and the real controller; creates a few
// mesh pods in a namespace enforcing Pod Security "restricted"; prints each pod's progress until it
// is released (or refused); then prints the live rules of one pod with the controller's inspect.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/kubelet"
)

// The demo's node uses its own bridge and prefixes, so it can run next to the end-to-end tests.
const (
	bridge    = "pnc-demo0"
	podCIDRv4 = "10.246.0.1/16"
	podCIDRv6 = "fd00:246::1/64"
	namespace = "demo"
)

func main() {
	hold := flag.Bool("hold", false, "keep everything running after the demo until interrupted (prints how to reach it)")
	verbose := flag.Bool("v", false, "print the control plane's and the simulated node's progress lines")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *hold, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, hold, verbose bool) error {
	if os.Geteuid() != 0 {
		return errors.New("run it as root: the simulated node creates network namespaces, veths and cgroups (sudo make demo)")
	}
	dir, err := os.MkdirTemp("", "istio-pod-network-demo-")
	if err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var detail io.Writer = io.Discard
	if verbose {
		detail = os.Stderr
	}

	say("building the controller and wait binaries")
	bins, err := harness.Build(ctx, filepath.Join(dir, "bin"))
	if err != nil {
		return err
	}
	say("starting etcd and kube-apiserver (the first run builds them from the Go module proxy: about 10 minutes)")
	c, err := cluster.Start(ctx, cluster.Options{Log: progressLog{detail}})
	if err != nil {
		return err
	}
	defer c.Stop()
	say("control plane ready at %s", c.Host)

	netnsDir := filepath.Join(dir, "netns")
	kl, err := kubelet.Start(ctx, kubelet.Options{Client: c.Client, WaitBinary: bins.Wait, StateDir: filepath.Join(dir, "node"),
		NetnsDir: netnsDir, Bridge: bridge, PodCIDRv4: podCIDRv4, PodCIDRv6: podCIDRv6, Log: detail})
	if err != nil {
		return err
	}
	defer kl.Stop()
	say("simulated node %s: bridge %s (%s, %s), pod namespaces registered in %s", c.NodeName, bridge, podCIDRv4, podCIDRv6, netnsDir)

	say("installing the Helm chart (rendered by helm, built on first use): ServiceAccount, RBAC, admission policies, DaemonSet")
	in, err := harness.InstallChart(ctx, c, harness.InstallOptions{Dir: dir, Log: detail})
	if err != nil {
		return err
	}
	ctrl, err := harness.StartController(ctx, harness.ControllerOptions{
		Binary: bins.Controller, Kubeconfig: in.Kubeconfig, NodeName: c.NodeName, NetnsDirs: netnsDir,
		LockDir: filepath.Join(dir, "locks"), Args: []string{"-v=2"}, LogPath: filepath.Join(dir, "controller.log"),
	})
	if err != nil {
		return err
	}
	defer ctrl.Stop(10 * time.Second)
	say("controller running as %s (token bound to pod %s/%s), metrics at http://%s/metrics",
		in.User, in.Pod.Namespace, in.Pod.Name, ctrl.MetricsAddr)

	if _, err := c.EnsureNamespace(ctx, namespace, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}); err != nil {
		return err
	}
	pods := []*corev1.Pod{
		harness.MeshPod(namespace, "web", c.NodeName),
		harness.MeshPod(namespace, "api", c.NodeName, harness.DualStack()),
		harness.MeshPod(namespace, "openshift-uid", c.NodeName, harness.WithProxyUID(1000670000)),
		harness.MeshPod(namespace, "typo", c.NodeName, harness.WithAnnotations(map[string]string{
			"traffic.sidecar.istio.io/excludeOutboundPorts": "5432,postgres"})),
	}
	say("creating %d mesh pods in namespace %q (Pod Security: restricted); \"typo\" has a malformed annotation", len(pods), namespace)
	start := time.Now()
	for _, p := range pods {
		if _, err := c.Client.CoreV1().Pods(namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if err := follow(ctx, c, start, len(pods)); err != nil {
		return fmt.Errorf("%w%s", err, ctrl.LogTail(20))
	}

	say("live rules of pod %s/web (istio-pod-network-controller inspect -n %s web):", namespace, namespace)
	cmd := exec.CommandContext(ctx, bins.Controller, "inspect", "--kubeconfig="+c.AdminKubeconfig, "--netns-dirs="+netnsDir,
		"--lock-dir="+filepath.Join(dir, "inspect-locks"), "-n", namespace, "web")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	if hold {
		say("holding: kubectl --kubeconfig %s get pods -n %s; controller log %s; Ctrl-C stops everything", c.AdminKubeconfig, namespace, filepath.Join(dir, "controller.log"))
		<-ctx.Done()
	}
	say("stopping: controller, simulated node (namespaces, veths, bridge, cgroups), control plane")
	return nil
}

// follow prints each pod's progress as the API server shows it until every pod is released or
// refused.
func follow(ctx context.Context, c *cluster.Cluster, start time.Time, n int) error {
	last := map[string]string{}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		list, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err == nil {
			sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
			done := 0
			for i := range list.Items {
				p := &list.Items[i]
				state, final := describe(p)
				if state != last[p.Name] {
					fmt.Printf("  %7.3fs  %-14s %s\n", time.Since(start).Seconds(), p.Name, state)
					last[p.Name] = state
				}
				if final {
					done++
				}
			}
			if done == n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pods not all released or refused: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// describe is a pod's progress in one line, and whether it is final.
func describe(p *corev1.Pod) (string, bool) {
	var wait *corev1.ContainerStatus
	for i := range p.Status.InitContainerStatuses {
		if p.Status.InitContainerStatuses[i].Name == harness.WaitContainer {
			wait = &p.Status.InitContainerStatuses[i]
		}
	}
	ann := p.Annotations
	switch {
	case wait != nil && wait.State.Terminated != nil && wait.State.Terminated.ExitCode == 0 && p.Status.Phase == corev1.PodRunning:
		return "released: the wait container proved the redirect and exited 0; pod Running", true
	case wait != nil && wait.State.Terminated != nil:
		return fmt.Sprintf("refused: wait container exited %d: %s", wait.State.Terminated.ExitCode, wait.State.Terminated.Message), true
	case ann[contract.KeyStatus] == string(contract.StatusReady):
		return fmt.Sprintf("controller: ready for netns %s (rules %s, %s); the wait container self-tests",
			ann[contract.KeyNetns], ann[contract.KeyRules], ann[contract.KeyFamilies]), false
	case ann[contract.KeyStatus] != "":
		return fmt.Sprintf("controller: %s: %s", ann[contract.KeyStatus], ann[contract.KeyReason]), false
	case p.Status.PodIP != "":
		ips := []string{}
		for _, ip := range p.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		return fmt.Sprintf("sandbox up: IPs %s; the wait container waits", strings.Join(ips, ", ")), false
	}
	return "created", false
}

func say(format string, args ...any) {
	fmt.Printf("demo: "+format+"\n", args...)
}

// progressLog shows the tool build's progress lines (the first run takes minutes) and sends the
// rest to w.
type progressLog struct{ w io.Writer }

func (l progressLog) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "building") {
		fmt.Print("demo: " + string(p))
		return len(p), nil
	}
	return l.w.Write(p)
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// The demo's mesh workloads, the same on both nodes: "web" is the one inspected, "typo" is refused.
const (
	namespace  = "demo"
	inspected  = "web"
	refusedPod = "typo"
)

// progress prints the demo's steps as "demo [N/M m:ss] ...", with the time since the start.
type progress struct {
	start time.Time
	n, m  int
}

func (p *progress) step(format string, args ...any) {
	p.n++
	fmt.Printf("demo [%d/%d %s] %s\n", p.n, p.m, p.elapsed(), fmt.Sprintf(format, args...))
}

func (p *progress) say(format string, args ...any) {
	fmt.Printf("demo: %s\n", fmt.Sprintf(format, args...))
}

func (p *progress) elapsed() string {
	s := int(time.Since(p.start).Seconds())
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// toolLog shows the tool builds' and the node's progress lines (the first run takes minutes) and
// sends the rest to w.
type toolLog struct{ w io.Writer }

func (l toolLog) Write(p []byte) (int, error) {
	if s := string(p); strings.HasPrefix(s, "build.sh:") || strings.Contains(s, "step ") {
		fmt.Print("  " + s)
		return len(p), nil
	}
	return l.w.Write(p)
}

// follow prints each pod's progress as the API server shows it until n pods are released or
// refused.
func follow(ctx context.Context, client kubernetes.Interface, start time.Time, n int, timeout time.Duration) error {
	last := map[string]string{}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		list, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err == nil {
			sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
			done := 0
			for i := range list.Items {
				p := &list.Items[i]
				state, final := describe(p)
				if state != last[p.Name] {
					fmt.Printf("  %7.3fs  %-22s %s\n", time.Since(start).Seconds(), p.Name, state)
					last[p.Name] = state
				}
				if final {
					done++
				}
			}
			if done >= n {
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

// describe is a pod's progress in one line, and whether it is final (released or refused).
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
	case wait != nil && wait.State.Terminated != nil && wait.State.Terminated.ExitCode == 0:
		return "released: the wait container proved the redirect and exited 0; the next containers start", false
	case wait != nil && wait.State.Terminated != nil:
		return fmt.Sprintf("refused: wait container exited %d: %s", wait.State.Terminated.ExitCode, wait.State.Terminated.Message), true
	case ann[contract.KeyStatus] == string(contract.StatusFailed):
		return fmt.Sprintf("refused by the controller: %s", ann[contract.KeyReason]), true
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

// admin runs what a cluster admin looks at, with the real kubectl against the demo's API server.
type admin struct {
	kubectl, kubeconfig string
	// inspect is the command that inspects a pod on its node: the controller binary on the
	// simulated node, kubectl exec into the controller's pod on the real one.
	inspect func(ctx context.Context, ns, pod string) (display string, cmd *exec.Cmd, err error)
}

// show prints `kubectl get pods -o wide`, the controller annotations of the pod inspected, the
// refused pod's Event and the inspected pod's inspect report, each after the command an admin
// would type.
func (a admin) show(ctx context.Context, inspected, refused string) error {
	if err := a.run(ctx, "-n", namespace, "get", "pods", "-o", "wide"); err != nil {
		return err
	}
	fmt.Printf("\n$ kubectl -n %s get pod %s -o jsonpath='{.metadata.annotations}' | tr , '\\n' | grep pod-network-controller\n", namespace, inspected)
	out, err := a.kubectlCmd(ctx, "-n", namespace, "get", "pod", inspected, "-o", "jsonpath={.metadata.annotations}").Output()
	if err != nil {
		return fmt.Errorf("kubectl get pod %s: %w", inspected, err)
	}
	for _, kv := range strings.Split(string(out), ",") {
		if strings.Contains(kv, "pod-network-controller") {
			fmt.Println(kv)
		}
	}
	if err := a.run(ctx, "-n", namespace, "get", "events", "--field-selector",
		"involvedObject.name="+refused+",source=istio-pod-network-controller"); err != nil {
		return err
	}
	display, cmd, err := a.inspect(ctx, namespace, inspected)
	if err != nil {
		return err
	}
	fmt.Printf("\n$ %s\n", display)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	return nil
}

// run prints "$ kubectl ARGS" and runs it, its output on stdout.
func (a admin) run(ctx context.Context, args ...string) error {
	fmt.Printf("\n$ kubectl %s\n", strings.Join(args, " "))
	cmd := a.kubectlCmd(ctx, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

func (a admin) kubectlCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, a.kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+a.kubeconfig)
	return cmd
}

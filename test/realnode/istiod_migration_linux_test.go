package realnode

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// controllerLabel selects the controller's pods (the chart's selector labels).
const controllerLabel = "app.kubernetes.io/name=istio-pod-network-controller"

// migrations runs the migration sections of docs/install.md on the shop namespace of
// TestIstiodOnTheRealNode, in the order a user would meet them.
func (n *Node) migrations(t *testing.T, r *docRun) {
	// Back to istio-init: istiod injects Istio's default template again.
	r.run(docDowngrade, shopNS)
	legacy := n.waitApp(t, shopNS, "sample", 2, func(p *corev1.Pod) bool {
		return podReady(p) && initExited(p, "istio-init")
	})
	rulesBefore := map[types.UID]string{}
	for _, p := range legacy {
		if slices.Contains(containerNames(p.Spec.InitContainers), harness.WaitContainer) {
			t.Fatalf("pod %s after the downgrade: init containers %v, want no wait container", p.Name, containerNames(p.Spec.InitContainers))
		}
		rules := n.podRules(t, &p)
		if !strings.Contains(rules, "ISTIO_OUTPUT") {
			t.Fatalf("pod %s: istio-init (Istio's pilot-agent) left no ISTIO_OUTPUT chain:\n%s", p.Name, rules)
		}
		rulesBefore[p.UID] = rules
	}
	// One Deployment opts in to the template while istiod injects istio-init everywhere else; once
	// its pod is released, the controller on the node has seen the istio-init pods (its informer
	// delivers the namespace's pod events in order).
	n.createDeployment(t, plainDeployment(shopNS, "canary", 1, nil, map[string]string{templatesAnnotation: "sidecar,pod-network-wait"}))
	canary := n.waitApp(t, shopNS, "canary", 1, func(p *corev1.Pod) bool { return released(p) && podReady(p) })
	checkInjected(t, &canary[0])
	// The controller's Events go out in order: once the canary's is there, any about the istio-init
	// pods would be too.
	n.waitEvent(t, &canary[0], "Programmed")
	for _, p := range legacy {
		cur, err := n.Cluster.Client.CoreV1().Pods(shopNS).Get(t.Context(), p.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if a := ours(cur.Annotations); len(a) > 0 {
			t.Errorf("istio-init pod %s: the controller annotated it: %v", p.Name, a)
		}
		if ev := n.controllerEvents(t, cur); len(ev) > 0 {
			t.Errorf("istio-init pod %s: the controller recorded Events: %v", p.Name, ev)
		}
		if got := n.podRules(t, cur); got != rulesBefore[p.UID] {
			t.Errorf("istio-init pod %s: its rules changed after the controller saw it:\n--- istio-init\n%s\n--- now\n%s", p.Name, rulesBefore[p.UID], got)
		}
	}

	// From istio-init: istiod with our values, a rollout restart, the new pods run the wait container.
	r.run(docFromInit, shopNS)
	for _, p := range n.waitApp(t, shopNS, "sample", 2, func(p *corev1.Pod) bool { return released(p) && podReady(p) }) {
		checkInjected(t, &p)
		checkAnnotations(t, &p)
	}
	checkLeftAlone(t, n.waitApp(t, shopNS, "outside", 1, podReady))

	n.foreignRules(t, r.tools)

	// Uninstalling: istiod's template first, then the workloads, then the chart.
	r.run(docUninstall, shopNS)
	for _, p := range n.waitApp(t, shopNS, "sample", 2, func(p *corev1.Pod) bool { return podReady(p) && initExited(p, "istio-init") }) {
		if slices.Contains(containerNames(p.Spec.InitContainers), harness.WaitContainer) {
			t.Errorf("pod %s after the uninstall: init containers %v, want no wait container", p.Name, containerNames(p.Spec.InitContainers))
		}
	}
	if _, err := n.Cluster.Client.AppsV1().DaemonSets(controllerNS).Get(t.Context(), release, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the controller's DaemonSet after helm uninstall: %v, want not found", err)
	}
}

// foreignRules is the Istio CNI case: a pod injected with our template whose namespace already
// holds Istio's rules, written by Istio's own pilot-agent in the legacy backend (what Istio's CNI
// plugin does at sandbox creation on a legacy-iptables node) before the controller sees the pod.
// The controller is paused (its DaemonSet selects no node) while the rules are written, so the
// order is certain. It must refuse the pod as foreign, with the reason, and never release it.
func (n *Node) foreignRules(t *testing.T, tools string) {
	ctx := t.Context()
	ds := n.Cluster.Client.AppsV1().DaemonSets(controllerNS)
	pause := func(v string) {
		patch := `{"spec":{"template":{"spec":{"nodeSelector":{"istio-pod-network-controller.test/paused":` + v + `}}}}}`
		if _, err := ds.Patch(ctx, release, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pause(`"true"`)
	// Gone, not only terminating: a terminating controller still reconciles.
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, podTimeout, true, func(ctx context.Context) (bool, error) {
		list, err := n.Cluster.Client.CoreV1().Pods(controllerNS).List(ctx, metav1.ListOptions{LabelSelector: controllerLabel})
		return err == nil && len(list.Items) == 0, nil
	})
	if err != nil {
		t.Fatalf("the controller pod still there after its DaemonSet selects no node: %v", err)
	}
	n.createDeployment(t, plainDeployment(shopNS, "cni", 1, nil, nil))
	pod := n.waitApp(t, shopNS, "cni", 1, waitRunningNow)[0]
	netns, err := PodNetns(string(pod.UID))
	if err != nil {
		t.Fatal(err)
	}
	if a := ours(pod.Annotations); len(a) > 0 {
		t.Fatalf("pod %s: annotated %v while no controller runs", pod.Name, a)
	}
	// Istio CNI's sidecar redirection, as istio-init's arguments give it.
	args := []string{"--net=" + netns, filepath.Join(tools, "pilot-agent"), "istio-iptables", "--force-iptables-binary=legacy",
		"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"}
	if out, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput(); err != nil {
		t.Fatalf("Istio's pilot-agent istio-iptables in %s: %v\n%s", netns, err, out)
	}
	if out, err := exec.CommandContext(ctx, "nsenter", "--net="+netns, "iptables-legacy-save").CombinedOutput(); err != nil || !strings.Contains(string(out), "ISTIO_OUTPUT") {
		t.Fatalf("iptables-legacy-save in %s after pilot-agent: %v, want an ISTIO_OUTPUT chain:\n%s", netns, err, out)
	}
	pause("null")
	p := n.waitApp(t, shopNS, "cni", 1, hasStatus(contract.StatusFailed))[0]
	reason := p.Annotations[contract.KeyReason]
	t.Logf("pod %s refused: %s", p.Name, reason)
	if !strings.Contains(reason, "already holds ISTIO_* chains in the other iptables backend") || !strings.Contains(reason, netns) {
		t.Errorf("pod %s: reason %q, want the foreign ISTIO_* chains in %s named", p.Name, reason, netns)
	}
	if released(&p) {
		t.Errorf("pod %s: released although its namespace holds foreign rules", p.Name)
	}
	n.waitEvent(t, &p, "ForeignRules")
	n.waitPods(t, controllerNS, "the controller pod Ready again", func(ps []corev1.Pod) bool {
		return slices.ContainsFunc(ps, func(p corev1.Pod) bool { return p.Labels["app.kubernetes.io/name"] == release && podReady(&p) })
	})
	if err := n.Cluster.Client.AppsV1().Deployments(shopNS).Delete(ctx, "cni", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// initExited reports whether the init container name exited 0.
func initExited(p *corev1.Pod, name string) bool {
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name == name {
			return s.State.Terminated != nil && s.State.Terminated.ExitCode == 0
		}
	}
	return false
}

// waitRunningNow reports whether the pod's wait container is running (so its sandbox exists).
func waitRunningNow(p *corev1.Pod) bool {
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name == harness.WaitContainer {
			return s.State.Running != nil
		}
	}
	return false
}

// podRules is iptables-nft-save in the pod's network namespace, without comments and counters
// (saveIn).
func (n *Node) podRules(t *testing.T, p *corev1.Pod) string {
	t.Helper()
	netns, err := PodNetns(string(p.UID))
	if err != nil {
		t.Fatal(err)
	}
	return saveIn(t, netns)
}

package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/yaml"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

const (
	release          = "istio-pod-network-controller"
	controllerNS     = "istio-system"
	meshNS           = "mesh-real"
	deployment       = "sample"
	podTimeout       = 5 * time.Minute
	istioCARootCert  = "istio-ca-root-cert"
	restartedAtField = "kubectl.kubernetes.io/restartedAt"
)

// TestDeploymentOnTheRealNode is the first real-node scenario: the chart installed with helm as a
// user installs it (local images, the API server's address), a Deployment of 5 pods exactly as
// Istio's injector makes them in a Pod Security "restricted" namespace, all released by the real
// wait container through the real kubelet's downward-API volume; real TCP through each pod's
// redirect; the live rules equal `render`; scale and rollout restart; and the host's rules,
// snapshotted once the kubelet and the CNI bridge are up, unchanged at the end.
func TestDeploymentOnTheRealNode(t *testing.T) {
	cluster.Require(t)
	testutil.RequireRoot(t)
	ctx := t.Context()
	work := t.TempDir()
	archives, err := BuildProjectImages(ctx, work, testLog{t})
	if err != nil {
		t.Fatalf("build the images: %v", err)
	}
	n := StartForTest(t, Options{Images: archives})
	before, err := HostRules(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	if out, err := n.HelmInstall(ctx, "", release, controllerNS); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("helm install:\n%s", out)
	}
	n.waitPods(t, controllerNS, "the controller pod Ready", func(ps []corev1.Pod) bool {
		return len(ps) == 1 && podReady(&ps[0])
	})
	t.Logf("figure: helm install → controller pod Ready in %s", time.Since(t0).Round(time.Millisecond))

	n.meshNamespace(t)
	watcher := n.watchReleases(t, meshNS)
	n.createMeshDeployment(t, 5, nil)
	pods := n.waitReleased(t, 5, nil)
	watcher.report(t, "create → released, 5 pods at once")

	bin := filepath.Join(work, "bin", "istio-pod-network-controller")
	for i := range pods {
		p := &pods[i]
		checkAnnotations(t, p)
		netns, err := PodNetns(string(p.UID))
		if err != nil {
			t.Fatal(err)
		}
		checkRulesEqualRender(t, bin, p, netns)
		if err := CheckRecord(netns, p.Annotations[contract.KeyNetns]); err != nil {
			t.Errorf("pod %s: %v", p.Name, err)
		}
		checkTraffic(t, netns, p.Status.PodIP)
	}

	// kubectl scale deployment/sample --replicas=3, through the scale subresource as kubectl does.
	scale, err := n.Cluster.Client.AppsV1().Deployments(meshNS).GetScale(ctx, deployment, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 3
	if _, err := n.Cluster.Client.AppsV1().Deployments(meshNS).UpdateScale(ctx, deployment, scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitReleased(t, 3, nil)

	// kubectl rollout restart deployment/sample: a new template annotation, new pods, all released.
	old := map[types.UID]bool{}
	for _, p := range n.listPods(t, meshNS) {
		old[p.UID] = true
	}
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, restartedAtField, time.Now().Format(time.RFC3339))
	if _, err := n.Cluster.Client.AppsV1().Deployments(meshNS).Patch(ctx, deployment, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range n.waitReleased(t, 3, old) {
		netns, err := PodNetns(string(p.UID))
		if err != nil {
			t.Fatal(err)
		}
		checkTraffic(t, netns, p.Status.PodIP)
	}
	watcher.report(t, "create → released, all pods of the scenario")
	n.reportRSS(t)

	if err := n.Cluster.Client.AppsV1().Deployments(meshNS).Delete(ctx, deployment, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitPods(t, meshNS, "no pods left", func(ps []corev1.Pod) bool { return len(ps) == 0 })
	hostRulesUnchanged(t, "the Deployment's scenario", before)
}

// createMeshDeployment creates the Deployment of injected pods (MeshDeployment) in meshNS with
// replicas, its pod spec first changed by edit when edit is not nil.
func (n *Node) createMeshDeployment(t *testing.T, replicas int32, edit func(*corev1.PodSpec)) {
	t.Helper()
	dep, err := MeshDeployment(t.Context(), meshNS, deployment, replicas)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&dep.Spec.Template.Spec)
	}
	if _, err := n.Cluster.Client.AppsV1().Deployments(meshNS).Create(t.Context(), dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// meshNamespace creates the mesh namespace enforcing Pod Security "restricted", with the istiod CA
// ConfigMap the injected pods mount.
func (n *Node) meshNamespace(t *testing.T) {
	ctx := t.Context()
	c := n.Cluster.Client
	_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: meshNS, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted", "istio-injection": "enabled"},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CoreV1().ConfigMaps(meshNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: istioCARootCert}, Data: map[string]string{"root-cert.pem": string(n.Cluster.CAData)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

func (n *Node) listPods(t *testing.T, ns string) []corev1.Pod {
	list, err := n.Cluster.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

func (n *Node) waitPods(t *testing.T, ns, what string, cond func([]corev1.Pod) bool) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, podTimeout, true, func(context.Context) (bool, error) {
		pods = n.listPods(t, ns)
		return cond(pods), nil
	})
	if err != nil {
		var states []string
		for _, p := range pods {
			b, _ := yaml.Marshal(p.Status)
			states = append(states, fmt.Sprintf("pod %s annotations %v status:\n%s", p.Name, ours(p.Annotations), b))
		}
		t.Fatalf("%s in %s: %v\n%s", what, ns, err, strings.Join(states, "\n"))
	}
	return pods
}

// waitReleased waits until the mesh namespace has exactly want pods, none of them in old, each
// released (wait container exited 0), Ready, with our annotations.
func (n *Node) waitReleased(t *testing.T, want int, old map[types.UID]bool) []corev1.Pod {
	t.Helper()
	return n.waitPods(t, meshNS, fmt.Sprintf("%d released and Ready pods", want), func(ps []corev1.Pod) bool {
		if len(ps) != want {
			return false
		}
		for i := range ps {
			if old[ps[i].UID] || !released(&ps[i]) || !podReady(&ps[i]) {
				return false
			}
		}
		return true
	})
}

func released(p *corev1.Pod) bool {
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name == harness.WaitContainer {
			return s.State.Terminated != nil && s.State.Terminated.ExitCode == 0
		}
	}
	return false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func ours(ann map[string]string) map[string]string {
	out := map[string]string{}
	for _, k := range contract.Keys {
		if v, ok := ann[k]; ok {
			out[k] = v
		}
	}
	return out
}

func checkAnnotations(t *testing.T, p *corev1.Pod) {
	t.Helper()
	ann := p.Annotations
	if ann[contract.KeyStatus] != "ready" || ann[contract.KeyRules] == "" || ann[contract.KeyFamilies] != contract.FamiliesIPv4 || ann[contract.KeyReason] != "" {
		t.Errorf("pod %s: annotations %v, want ready, a rules hash, ipv4, no reason", p.Name, ours(ann))
	}
}

// releaseWatch records, per pod, when it was first seen and when our status annotation said ready.
type releaseWatch struct {
	mu       sync.Mutex
	seen     map[types.UID]time.Time
	released map[types.UID]time.Time
}

func (n *Node) watchReleases(t *testing.T, ns string) *releaseWatch {
	w, err := n.Cluster.Client.CoreV1().Pods(ns).Watch(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	r := &releaseWatch{seen: map[types.UID]time.Time{}, released: map[types.UID]time.Time{}}
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			now := time.Now()
			r.mu.Lock()
			if _, ok := r.seen[p.UID]; !ok {
				r.seen[p.UID] = now
			}
			if _, ok := r.released[p.UID]; !ok && released(p) {
				r.released[p.UID] = now
			}
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *releaseWatch) report(t *testing.T, what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ds []time.Duration
	for uid, at := range r.released {
		ds = append(ds, at.Sub(r.seen[uid]))
	}
	if len(ds) == 0 {
		t.Errorf("%s: no release observed", what)
		return
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	t.Logf("figure: %s (wait container exited 0, as seen by a watch): %d pods, p50 %s, max %s",
		what, len(ds), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
}

// reportRSS logs the resident memory of the node's and the control plane's processes.
func (n *Node) reportRSS(t *testing.T) {
	pids := n.Cluster.Pids()
	pids["kubelet"], pids["containerd"] = n.kubelet.Pid(), n.containerd.Pid()
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range pids {
			if !yield(k) {
				return
			}
		}
	})
	var parts []string
	for _, name := range names {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pids[name]))
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			if rss, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				parts = append(parts, name+" "+strings.TrimSpace(rss))
			}
		}
	}
	t.Logf("figure: RSS %s", strings.Join(parts, ", "))
}

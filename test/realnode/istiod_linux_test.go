package realnode

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

const (
	shopNS = "shop"
	// injectLabel opts a pod out of injection (Istio's label).
	injectLabel = "sidecar.istio.io/inject"
	// templatesAnnotation picks the injection templates of one pod (Istio's annotation).
	templatesAnnotation = "inject.istio.io/templates"
)

// TestIstiodOnTheRealNode is the user's path with a real istiod: docs/install.md's blocks run
// verbatim (see docRun) on the real node: this chart, then Istio's base and istiod charts with the
// values this chart prints; Deployments of a plain application in a "restricted" namespace are
// injected by istiod's webhook, reordered by our MutatingAdmissionPolicy, released by the
// controller and Running; a pod opted out of injection is left alone. Then the migrations: back to
// istio-init (the controller leaves those pods alone), from istio-init (the new pods run our wait
// container), a pod whose namespace already holds Istio's rules refused as foreign, and the
// uninstall order.
func TestIstiodOnTheRealNode(t *testing.T) {
	cluster.Require(t)
	testutil.RequireRoot(t)
	ctx := t.Context()
	work := t.TempDir()
	t0 := time.Now()
	archives, err := BuildProjectImages(ctx, work, testLog{t})
	if err != nil {
		t.Fatalf("build the images: %v", err)
	}
	istio, err := BuildIstioImages(ctx, work, testLog{t})
	if err != nil {
		t.Fatalf("build Istio's images: %v", err)
	}
	charts, err := FindIstioCharts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tools, err := cluster.BuildTools(ctx, testLog{t}, "kubectl", "helm")
	if err != nil {
		t.Fatal(err)
	}
	root, err := harness.ModuleRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("figure: images, charts (istio.io/istio %s) and tools in %s", charts.Version, time.Since(t0).Round(time.Millisecond))
	n := StartForTest(t, Options{Images: append(archives, istio...)})
	r := &docRun{n: n, root: root, charts: charts, tools: tools, dir: t.TempDir(), t: t, duration: map[string]time.Duration{}}
	t.Cleanup(func() {
		if t.Failed() {
			r.diagnose()
		}
	})

	// A new mesh.
	r.run(docNewMesh, shopNS)
	n.createDeployment(t, plainDeployment(shopNS, "sample", 2, nil, nil))
	n.createDeployment(t, plainDeployment(shopNS, "outside", 1, map[string]string{injectLabel: "false"}, nil))
	pods := n.waitApp(t, shopNS, "sample", 2, released)
	for i := range pods {
		checkInjected(t, &pods[i])
		checkAnnotations(t, &pods[i])
	}
	n.checkReleasedTraffic(t, &pods[0], filepath.Join(work, "bin", "istio-pod-network-controller"))
	checkLeftAlone(t, n.waitApp(t, shopNS, "outside", 1, podReady))
	t.Logf("figure: Deployment created → 2 injected pods released and Ready: %s", n.sinceCreated(t, shopNS, "sample"))

	n.migrations(t, r)
	for h, d := range r.duration {
		t.Logf("figure: docs/install.md %q ran in %s", h, d.Round(time.Millisecond))
	}
	t.Logf("figure: the whole test in %s", time.Since(t0).Round(time.Millisecond))
}

// plainDeployment is an application's Deployment as a user writes it: one container (the
// stand-in app), non-root, no capabilities, seccomp RuntimeDefault (Pod Security "restricted"),
// nothing of Istio's; labels and annotations are added to its pod template.
func plainDeployment(ns, name string, replicas int32, labels, annotations map[string]string) *appsv1.Deployment {
	podLabels := map[string]string{"app": name}
	for k, v := range labels {
		podLabels[k] = v
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: annotations},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr(int64(1)),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot: ptr(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name: "app", Image: StandinImage, Command: []string{"/standin"}, Args: []string{"app"},
						Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
				},
			},
		},
	}
}

func (n *Node) createDeployment(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	if _, err := n.Cluster.Client.AppsV1().Deployments(d.Namespace).Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Deployment %s/%s: %v", d.Namespace, d.Name, err)
	}
}

// waitApp waits until the Deployment app in ns has exactly want pods of its current template
// (the ReplicaSet of the Deployment's latest revision) and each satisfies ok.
func (n *Node) waitApp(t *testing.T, ns, app string, want int, ok func(*corev1.Pod) bool) []corev1.Pod {
	t.Helper()
	var out []corev1.Pod
	n.waitPods(t, ns, fmt.Sprintf("%d pods of %s", want, app), func(ps []corev1.Pod) bool {
		hash := n.currentHash(t, ns, app)
		out = out[:0]
		for i := range ps {
			if ps[i].Labels["app"] != app {
				continue
			}
			if ps[i].Labels["pod-template-hash"] != hash || !ok(&ps[i]) {
				return false
			}
			out = append(out, ps[i])
		}
		return hash != "" && len(out) == want
	})
	return out
}

// currentHash is the pod-template-hash of the Deployment's newest ReplicaSet.
func (n *Node) currentHash(t *testing.T, ns, app string) string {
	list, err := n.Cluster.Client.AppsV1().ReplicaSets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	best, rev := "", -1
	for _, rs := range list.Items {
		var v int
		fmt.Sscan(rs.Annotations["deployment.kubernetes.io/revision"], &v)
		if v > rev {
			best, rev = rs.Labels["pod-template-hash"], v
		}
	}
	return best
}

// sinceCreated is how long ago the Deployment was created.
func (n *Node) sinceCreated(t *testing.T, ns, name string) time.Duration {
	d, err := n.Cluster.Client.AppsV1().Deployments(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return time.Since(d.CreationTimestamp.Time).Round(time.Second)
}

// checkInjected checks what istiod's webhook and our admission policy made of the plain pod:
// Istio's istio-proxy, our wait container first, no istio-init or istio-validation, and with a
// native-sidecar proxy the wait container in front of it (Istio's injector puts the proxy first;
// our MutatingAdmissionPolicy moves the wait container back).
func checkInjected(t *testing.T, p *corev1.Pod) {
	t.Helper()
	names := containerNames(p.Spec.InitContainers)
	if len(names) == 0 || names[0] != harness.WaitContainer {
		t.Errorf("pod %s: init containers %v, want %s first", p.Name, names, harness.WaitContainer)
	}
	for _, c := range []string{"istio-init", "istio-validation"} {
		if slices.Contains(names, c) {
			t.Errorf("pod %s: init containers %v include %s", p.Name, names, c)
		}
	}
	native := slices.IndexFunc(p.Spec.InitContainers, func(c corev1.Container) bool {
		return c.Name == podconfig.ProxyContainer && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
	})
	classic := slices.Contains(containerNames(p.Spec.Containers), podconfig.ProxyContainer)
	switch {
	case native > 0:
		t.Logf("pod %s: istio-proxy is a native sidecar; init containers %v", p.Name, names)
	case classic:
		t.Logf("pod %s: istio-proxy is a classic sidecar; init containers %v", p.Name, names)
	default:
		t.Errorf("pod %s: no istio-proxy after the wait container (init %v, containers %v)", p.Name, names, containerNames(p.Spec.Containers))
	}
	if p.Annotations["sidecar.istio.io/status"] == "" {
		t.Errorf("pod %s: no sidecar.istio.io/status annotation: not injected by istiod", p.Name)
	}
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// checkLeftAlone checks pods istiod did not inject: no istio-proxy, no wait container, no
// annotation of ours.
func checkLeftAlone(t *testing.T, pods []corev1.Pod) {
	t.Helper()
	for _, p := range pods {
		all := append(containerNames(p.Spec.InitContainers), containerNames(p.Spec.Containers)...)
		if slices.Contains(all, podconfig.ProxyContainer) || slices.Contains(all, harness.WaitContainer) {
			t.Errorf("pod %s (%s: false): containers %v, want no istio-proxy and no wait container", p.Name, injectLabel, all)
		}
		if a := ours(p.Annotations); len(a) > 0 {
			t.Errorf("pod %s: annotations of the controller %v on a pod it must leave alone", p.Name, a)
		}
	}
}

// checkReleasedTraffic checks a released pod's live rules against render and real TCP through
// its redirect.
func (n *Node) checkReleasedTraffic(t *testing.T, p *corev1.Pod, bin string) {
	t.Helper()
	netns, err := PodNetns(string(p.UID))
	if err != nil {
		t.Fatal(err)
	}
	checkRulesEqualRender(t, bin, p, netns)
	checkTraffic(t, netns, p.Status.PodIP)
}

// controllerEvents lists the Events the controller recorded about the pod.
func (n *Node) controllerEvents(t *testing.T, p *corev1.Pod) []string {
	list, err := n.Cluster.Client.CoreV1().Events(p.Namespace).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.uid=" + string(p.UID)})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Source.Component == "istio-pod-network-controller" || e.ReportingController == "istio-pod-network-controller" {
			out = append(out, e.Reason+": "+e.Message)
		}
	}
	return out
}

// waitEvent waits until the controller has recorded an Event with reason about the pod (Events
// are sent asynchronously, after the annotation) and returns them all.
func (n *Node) waitEvent(t *testing.T, p *corev1.Pod, reason string) []string {
	t.Helper()
	var ev []string
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		ev = n.controllerEvents(t, p)
		return slices.ContainsFunc(ev, func(e string) bool { return strings.HasPrefix(e, reason+": ") }), nil
	})
	if err != nil {
		t.Errorf("pod %s: controller Events %v, want %s: %v", p.Name, ev, reason, err)
	}
	return ev
}

// hasStatus reports whether the controller's status annotation is s.
func hasStatus(s contract.Status) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool { return p.Annotations[contract.KeyStatus] == string(s) }
}

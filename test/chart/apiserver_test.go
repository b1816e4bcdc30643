package chart

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// Names the chart gives the release's admission policies.
const (
	// annotationPolicy protects the controller's annotations.
	annotationPolicy = release + "-annotations"
	// waitFirstPolicy names the MutatingAdmissionPolicy that puts the wait container before a
	// native-sidecar istio-proxy, and the ValidatingAdmissionPolicy that rejects the opposite.
	waitFirstPolicy = release + "-wait-first"
	// pollInterval is how often the tests probe for asynchronous API server changes.
	pollInterval = 200 * time.Millisecond
)

// TestOnAPIServer installs the chart on the local control plane (kube-apiserver v1.37 and etcd,
// Node+RBAC authorization, PodSecurity and admission policies on) as the e2e harness does, and
// checks what the API server makes of it. Gated like the other end-to-end tests: set E2E=1; always
// runs when CI is set.
func TestOnAPIServer(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	in, err := harness.InstallChart(ctx, c, harness.InstallOptions{Helm: helmPath(t), Dir: t.TempDir(), Log: testWriter{t}})
	if err != nil {
		t.Fatalf("install the chart: %v", err)
	}
	waitForPolicies(t, ctx, c.Client, in.Objects)

	t.Run("OpenShiftManifestsDryRun", func(t *testing.T) { testOpenShiftDryRun(t, ctx, c) })
	t.Run("AnnotationPolicy", func(t *testing.T) { testAnnotationPolicy(t, ctx, c, in) })
	t.Run("InjectedPodsRestricted", func(t *testing.T) { testInjectedPodsRestricted(t, ctx, c) })
	t.Run("WaitFirstAfterInjectionWebhook", func(t *testing.T) { testWaitFirstAfterWebhook(t, ctx, c) })
	// Late: it removes the MutatingAdmissionPolicy's binding for a while.
	t.Run("WaitFirstValidation", func(t *testing.T) { testWaitFirstValidation(t, ctx, c, in) })
	t.Run("MetricsAuth", func(t *testing.T) { testMetricsAuth(t, ctx, c, in) })
	// Last: a second release's annotation policy would deny the first release's controller.
	t.Run("HelmInstall", func(t *testing.T) { testHelmInstall(t, c) })
}

// waitForPolicies waits until the API server enforces the chart's admission policies, which take
// effect asynchronously after they are created: a dry-run pod with a forged status annotation is
// rejected, and (when the MutatingAdmissionPolicy is installed) a dry-run pod whose wait container
// follows a native-sidecar istio-proxy comes back reordered.
func waitForPolicies(t *testing.T, ctx context.Context, client kubernetes.Interface, objs []*unstructured.Unstructured) {
	t.Helper()
	probe := func(name string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "probe", Image: "probe.invalid/probe"}}},
		}
	}
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	checks := map[string]func(ctx context.Context) error{}
	if len(harness.OfKind(objs, "ValidatingAdmissionPolicyBinding")) > 0 {
		checks["annotation policy"] = func(ctx context.Context) error {
			pod := probe("policy-probe-annotations")
			pod.Annotations = map[string]string{contract.KeyStatus: string(contract.StatusReady)}
			_, err := client.CoreV1().Pods(namespace).Create(ctx, pod, dryRun)
			if err == nil || !strings.Contains(err.Error(), annotationPolicy) {
				return fmt.Errorf("a forged status annotation: %v", err)
			}
			return nil
		}
	}
	if slices.ContainsFunc(harness.OfKind(objs, "ValidatingAdmissionPolicyBinding"), func(o *unstructured.Unstructured) bool {
		return o.GetName() == release+"-binding-annotations"
	}) {
		unbound, err := client.CoreV1().Pods(namespace).Create(ctx, probe("policy-probe-binding"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checks["binding policy"] = func(ctx context.Context) error {
			err := client.CoreV1().Pods(namespace).Bind(ctx, &corev1.Binding{
				ObjectMeta: metav1.ObjectMeta{Name: unbound.Name, Annotations: map[string]string{contract.KeyStatus: string(contract.StatusReady)}},
				Target:     corev1.ObjectReference{Kind: "Node", Name: cluster.DefaultNodeName},
			}, dryRun)
			if err == nil || !strings.Contains(err.Error(), release+"-binding-annotations") {
				return fmt.Errorf("a Binding with a forged status annotation: %v", err)
			}
			return nil
		}
	}
	if len(harness.OfKind(objs, "MutatingAdmissionPolicyBinding")) > 0 {
		checks["wait-first mutation"] = func(ctx context.Context) error {
			pod := probe("policy-probe-order")
			pod.Spec.InitContainers = []corev1.Container{
				{Name: "istio-proxy", Image: "probe.invalid/proxy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)},
				{Name: harness.WaitContainer, Image: "probe.invalid/wait"},
			}
			got, err := client.CoreV1().Pods(namespace).Create(ctx, pod, dryRun)
			if err != nil || got.Spec.InitContainers[0].Name != harness.WaitContainer {
				return fmt.Errorf("a misordered pod: %v, init containers %v", err, containerNames(got.Spec.InitContainers))
			}
			return nil
		}
	}
	var last error
	err := wait.PollUntilContextTimeout(ctx, pollInterval, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, name := range slices.Sorted(maps.Keys(checks)) {
			if err := checks[name](ctx); err != nil {
				if ctx.Err() == nil {
					last = fmt.Errorf("%s not enforced yet: %w", name, err)
				}
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("admission policies not enforced: %v (%v)", err, last)
	}
}

// testOpenShiftDryRun: the OpenShift rendering is valid for the API server too (server-side apply,
// dry run); only the kinds this plain Kubernetes API server does not serve are left out.
func testOpenShiftDryRun(t *testing.T, ctx context.Context, c *cluster.Cluster) {
	dyn, err := dynamic.NewForConfig(c.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.Client.Discovery()))
	var unserved []string
	for _, o := range render(t, openShiftValues...) {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if meta.IsNoMatchError(err) {
			unserved = append(unserved, o.GetKind())
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		opts := metav1.ApplyOptions{FieldManager: "chart-test", Force: true, DryRun: []string{metav1.DryRunAll}}
		if _, err := ri.Apply(ctx, o.GetName(), o, opts); err != nil {
			t.Errorf("dry-run apply %s %q: %v", o.GetKind(), o.GetName(), err)
		}
	}
	slices.Sort(unserved)
	if want := []string{"SecurityContextConstraints", "ServiceMonitor"}; !slices.Equal(unserved, want) {
		t.Errorf("kinds the API server does not serve: %v, want only %v", unserved, want)
	}
}

// testHelmInstall installs and uninstalls the chart with helm itself (its kubeVersion constraint
// checked against the real server), as a second release in its own namespace.
func testHelmInstall(t *testing.T, c *cluster.Cluster) {
	ns := uniqueName("chart-helm")
	const second, fullname = "second", "second-istio-pod-network-controller"
	out, err := runHelm(t, "install", second, chartDir(t), "--namespace", ns, "--create-namespace",
		"--kubeconfig", c.AdminKubeconfig, "--set", "nativeSidecarOrder.mutate=false")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		"STATUS: deployed",
		"kubectl -n " + ns + " get configmap " + fullname + "-istiod-values",
		"helm upgrade istiod istio/istiod -n istio-system --reuse-values -f istiod-values.yaml",
		"--set env.ENABLE_NATIVE_SIDECARS=false",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("helm install output lacks %q:\n%s", want, out)
		}
	}
	if out, err := runHelm(t, "uninstall", second, "--namespace", ns, "--kubeconfig", c.AdminKubeconfig); err != nil {
		t.Errorf("%v\n%s", err, out)
	}
}

// testAnnotationPolicy: only the controller's ServiceAccount may set its annotations, only on pods of
// its own node (a token bound to the controller's pod on node-a), and it may change nothing else.
func testAnnotationPolicy(t *testing.T, ctx context.Context, c *cluster.Cluster, in *harness.Install) {
	ns := uniqueName("chart-policy")
	if _, err := c.EnsureNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	const otherNode = "node-b"
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: otherNode}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	appA := createPod(t, ctx, c.Client, ns, "app-a", c.NodeName)
	appB := createPod(t, ctx, c.Client, ns, "app-b", otherNode)

	tenant := tenantClient(t, ctx, c, ns)
	controller, unbound := controllerClients(t, ctx, c, in)
	kubeletConf, err := c.NodeConfig(c.NodeName) // the kubelet's identity: system:node:<node>
	if err != nil {
		t.Fatal(err)
	}
	kubelet, err := kubernetes.NewForConfig(kubeletConf)
	if err != nil {
		t.Fatal(err)
	}
	setIPs := func(ip string) []byte {
		return mustJSON(t, map[string]any{"status": map[string]any{"phase": "Pending", "podIP": ip, "podIPs": []any{map[string]any{"ip": ip}}}})
	}

	ready := map[string]any{contract.KeyStatus: string(contract.StatusReady), contract.KeyNetns: "cookie:4097", contract.KeyRules: "0123abcd", contract.KeyFamilies: contract.FamiliesIPv4}
	annotate := func(m map[string]any) []byte {
		return mustJSON(t, map[string]any{"metadata": map[string]any{"annotations": m}})
	}
	podsPatch := func(cs kubernetes.Interface, name string, patch []byte, sub ...string) func() error {
		return func() error {
			_, err := cs.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}, sub...)
			return err
		}
	}
	forged := func() error {
		pod := plainPod(ns, "forged", c.NodeName)
		pod.Annotations = map[string]string{contract.KeyStatus: string(contract.StatusReady)}
		_, err := tenant.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		return err
	}
	const (
		policyDenied = "may add, change or remove pod-network-controller.istio.io/* annotations; system:serviceaccount:"
		otherNodeMsg = `the controller on node "node-a" may not change a pod on node "node-b"`
		ipsDenied    = "may change status.podIP or status.podIPs; system:serviceaccount:"
	)
	// In order: later steps see the annotations the controller set on app-a.
	for _, step := range []struct {
		name string
		do   func() error
		// want is "" when the request must succeed, else substrings of the error.
		want []string
		// rbac: the error comes from authorization, not from the policy.
		rbac bool
	}{
		{name: "tenant creates a pod with a forged status", do: forged, want: []string{annotationPolicy, policyDenied + ns + ":tenant may not"}},
		{name: "tenant forges status through pods", do: podsPatch(tenant, appA.Name, annotate(ready)), want: []string{annotationPolicy, policyDenied}},
		{name: "tenant forges status through pods/status", do: podsPatch(tenant, appA.Name, annotate(ready), "status"), want: []string{annotationPolicy, policyDenied}},
		{name: "tenant sets an annotation of its own", do: podsPatch(tenant, appA.Name, annotate(map[string]any{"example.com/owner": "tenant"}))},
		{name: "controller annotates a pod of its node", do: podsPatch(controller, appA.Name, annotate(ready), "status")},
		{name: "controller updates and clears its annotations", do: podsPatch(controller, appA.Name, annotate(map[string]any{contract.KeyStatus: "pending", contract.KeyReason: "re-programming"}), "status")},
		{name: "controller re-annotates", do: podsPatch(controller, appA.Name, annotate(map[string]any{contract.KeyStatus: "ready", contract.KeyReason: nil}), "status")},
		{name: "tenant flips the controller's status", do: podsPatch(tenant, appA.Name, annotate(map[string]any{contract.KeyStatus: "failed"})), want: []string{policyDenied}},
		{name: "tenant removes the controller's netns", do: podsPatch(tenant, appA.Name, annotate(map[string]any{contract.KeyNetns: nil}), "status"), want: []string{policyDenied}},
		{name: "tenant changes its own annotation next to the controller's", do: podsPatch(tenant, appA.Name, annotate(map[string]any{"example.com/owner": "team-b"}))},
		{name: "kubelet sets the pod IPs, keeping the controller's annotations", do: podsPatch(kubelet, appA.Name, setIPs("10.244.0.7"), "status")},
		{name: "tenant points its pod IPs at another pod's", do: podsPatch(tenant, appA.Name, setIPs("10.244.0.8"), "status"), want: []string{annotationPolicy, ipsDenied + ns + ":tenant may not"}},
		{name: "tenant changes another status field", do: podsPatch(tenant, appA.Name, mustJSON(t, map[string]any{"status": map[string]any{"message": "tenant"}}), "status")},
		{name: "kubelet changes the pod IPs again", do: podsPatch(kubelet, appA.Name, setIPs("10.244.0.9"), "status")},
		{name: "controller annotates a pod of another node", do: podsPatch(controller, appB.Name, annotate(ready), "status"), want: []string{annotationPolicy, otherNodeMsg}},
		{name: "controller with a token bound to no pod", do: podsPatch(unbound, appA.Name, annotate(map[string]any{contract.KeyStatus: "pending"}), "status"), want: []string{"token is not bound to a pod"}},
		{name: "controller changes the pod IP", do: podsPatch(controller, appA.Name, mustJSON(t, map[string]any{"status": map[string]any{"podIP": "10.244.9.9", "podIPs": []any{map[string]any{"ip": "10.244.9.9"}}}}), "status"), want: []string{"may change only the pod-network-controller.istio.io/* annotations of a pod, not its status"}},
		{name: "controller adds a label", do: podsPatch(controller, appA.Name, mustJSON(t, map[string]any{"metadata": map[string]any{"labels": map[string]any{"hijack": "1"}}}), "status"), want: []string{"not its labels"}},
		{name: "controller changes another annotation", do: podsPatch(controller, appA.Name, annotate(map[string]any{"example.com/owner": "controller"}), "status"), want: []string{"not its other annotations"}},
		{name: "controller patches the pod itself", do: podsPatch(controller, appA.Name, annotate(ready)), want: []string{`cannot patch resource "pods"`}, rbac: true},
	} {
		err := step.do()
		switch {
		case len(step.want) == 0 && err != nil:
			t.Errorf("%s: %v, want it allowed", step.name, err)
		case len(step.want) > 0 && err == nil:
			t.Errorf("%s: allowed, want it denied with %q", step.name, step.want)
		case len(step.want) > 0:
			if !apierrors.IsForbidden(err) {
				t.Errorf("%s: %v, want Forbidden", step.name, err)
			}
			if !step.rbac && !strings.Contains(err.Error(), "ValidatingAdmissionPolicy") {
				t.Errorf("%s: %v, want the admission policy's denial", step.name, err)
			}
			for _, w := range step.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: error %q does not say %q", step.name, err, w)
				}
			}
		}
	}

	testBindingPolicy(t, ctx, c, tenant, ns)

	got, err := c.Client.CoreV1().Pods(ns).Get(ctx, appA.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{contract.KeyStatus: "ready", contract.KeyNetns: "cookie:4097", "example.com/owner": "team-b"} {
		if got.Annotations[k] != want {
			t.Errorf("app-a annotation %s = %q, want %q", k, got.Annotations[k], want)
		}
	}
	if _, ok := got.Annotations[contract.KeyReason]; ok {
		t.Errorf("app-a still has %s: the controller's removal was not applied", contract.KeyReason)
	}

	// The controller's RBAC: read pods everywhere, write Events, nothing else.
	if _, err := controller.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + c.NodeName}); err != nil {
		t.Errorf("controller lists its node's pods: %v", err)
	}
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: "app-a.", Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: appA.Name, UID: appA.UID, APIVersion: "v1"},
		Reason:         "Programmed", Message: "test", Type: corev1.EventTypeNormal,
		Source: corev1.EventSource{Component: "istio-pod-network-controller", Host: c.NodeName},
	}
	if _, err := controller.CoreV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Errorf("controller creates an Event: %v", err)
	}
	if _, err := controller.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("controller lists Secrets: %v, want Forbidden", err)
	}
	if err := controller.CoreV1().Pods(ns).Delete(ctx, appA.Name, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("controller deletes a pod: %v, want Forbidden", err)
	}
}

// testInjectedPodsRestricted creates the pods Istio's injector made with the chart's template
// (test/injection/testdata) in a namespace enforcing Pod Security "restricted".
func testInjectedPodsRestricted(t *testing.T, ctx context.Context, c *cluster.Cluster) {
	ns := uniqueName("chart-restricted")
	if _, err := c.EnsureNamespace(ctx, ns, map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		admitted, native, wait bool
	}{
		"classic":             {admitted: true, wait: true},
		"native":              {admitted: true, native: true, wait: true},
		"custom-uid":          {admitted: true, wait: true},
		"custom-uid-native":   {admitted: true, native: true, wait: true},
		"openshift-namespace": {admitted: true, wait: true},
		"interception-none":   {admitted: true},
		// TPROXY needs NET_ADMIN in istio-proxy: such pods cannot be "restricted".
		"tproxy": {admitted: false, wait: true},
	}
	pods := injectedPods(t)
	if got := slices.Sorted(maps.Keys(pods)); !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
		t.Fatalf("test/injection/testdata has cases %v; this test knows %v: update both", got, slices.Sorted(maps.Keys(want)))
	}
	for name, pod := range pods {
		t.Run(name, func(t *testing.T) {
			w := want[name]
			pod.Namespace = ns
			pod.Spec.NodeName = c.NodeName
			created, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
			if !w.admitted {
				if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `violates PodSecurity "restricted:latest"`) || !strings.Contains(err.Error(), "NET_ADMIN") {
					t.Fatalf("create: %v; want a PodSecurity restricted violation naming NET_ADMIN", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("the API server refused the injected pod in a restricted namespace: %v", err)
			}
			names := containerNames(created.Spec.InitContainers)
			switch {
			case !w.wait:
				if slices.Contains(names, harness.WaitContainer) {
					t.Errorf("init containers %v: no wait container expected", names)
				}
			case w.native:
				// Istio's injector put istio-proxy first; the chart's MutatingAdmissionPolicy put
				// the wait container back in front of it.
				if len(names) < 2 || names[0] != harness.WaitContainer || names[1] != "istio-proxy" {
					t.Errorf("init containers %v, want %s then istio-proxy", names, harness.WaitContainer)
				}
			default:
				if len(names) == 0 || names[0] != harness.WaitContainer {
					t.Errorf("init containers %v, want %s first", names, harness.WaitContainer)
				}
			}
		})
	}
}

// testWaitFirstAfterWebhook: in a real cluster Istio's webhook injects the native-sidecar
// istio-proxy (first in the init containers) after the MutatingAdmissionPolicy has already run
// once; the API server must re-invoke the policy, which puts the wait container back in front. A
// small webhook stands in for istiod here: it adds the proxy container of the native injected pod
// in front of the init containers, exactly where Istio's injector puts it.
func testWaitFirstAfterWebhook(t *testing.T, ctx context.Context, c *cluster.Cluster) {
	native := injectedPods(t)["native"]
	proxy := native.Spec.InitContainers[slices.IndexFunc(native.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == "istio-proxy" })]
	input := native.DeepCopy()
	input.Spec.InitContainers = slices.DeleteFunc(input.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == "istio-proxy" })

	srv := httptest.NewTLSServer(proxyFirstWebhook(proxy))
	t.Cleanup(srv.Close)
	ns := uniqueName("chart-webhook")
	if _, err := c.EnsureNamespace(ctx, ns, map[string]string{"chart-test/inject": ns}); err != nil {
		t.Fatal(err)
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: ns},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "inject-proxy.chart-test.local",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL:      ptr.To(srv.URL + "/inject"),
				CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"chart-test/inject": ns}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			// Istio's default: the injector is not re-invoked.
			ReinvocationPolicy: ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
		}},
	}
	if _, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), mwc.Name, metav1.DeleteOptions{})
	})

	input.Namespace = ns
	// The webhook configuration takes effect asynchronously: dry runs until the proxy is injected.
	err := wait.PollUntilContextTimeout(ctx, pollInterval, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Create(ctx, input.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, err
		}
		return slices.Contains(containerNames(p.Spec.InitContainers), "istio-proxy"), nil
	})
	if err != nil {
		t.Fatalf("the stand-in injection webhook never took effect: %v", err)
	}
	created, err := c.Client.CoreV1().Pods(ns).Create(ctx, input, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if names := containerNames(created.Spec.InitContainers); !slices.Equal(names, []string{harness.WaitContainer, "istio-proxy", "migrate"}) {
		t.Errorf("init containers %v after the injection webhook, want [%s istio-proxy migrate]", names, harness.WaitContainer)
	}
}

// proxyFirstWebhook is a mutating webhook that puts proxy first in a pod's init containers, as
// Istio's injector does with a native-sidecar istio-proxy.
func proxyFirstWebhook(proxy corev1.Container) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
			http.Error(w, "bad AdmissionReview", http.StatusBadRequest)
			return
		}
		var pod corev1.Pod
		if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		if !slices.Contains(containerNames(pod.Spec.InitContainers), proxy.Name) {
			patch, _ := json.Marshal([]map[string]any{{
				"op": "replace", "path": "/spec/initContainers",
				"value": append([]corev1.Container{proxy}, pod.Spec.InitContainers...),
			}})
			resp.Patch, resp.PatchType = patch, ptr.To(admissionv1.PatchTypeJSONPatch)
		}
		review.Response, review.Request = resp, nil
		out, _ := json.Marshal(review)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	})
}

// testWaitFirstValidation: without the MutatingAdmissionPolicy (a cluster older than 1.36), a pod
// whose wait container follows a native-sidecar istio-proxy is rejected with the reason.
func testWaitFirstValidation(t *testing.T, ctx context.Context, c *cluster.Cluster, in *harness.Install) {
	bindings := harness.OfKind(in.Objects, "MutatingAdmissionPolicyBinding")
	if err := in.Applier.Delete(ctx, bindings...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := in.Applier.Apply(context.Background(), bindings...); err != nil {
			t.Errorf("restore the MutatingAdmissionPolicyBinding: %v", err)
		}
	})
	native := injectedPods(t)["native"]
	native.Namespace = namespace
	var last error
	err := wait.PollUntilContextTimeout(ctx, pollInterval, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, last = c.Client.CoreV1().Pods(namespace).Create(ctx, native.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return last != nil && strings.Contains(last.Error(), waitFirstPolicy), nil
	})
	if err != nil {
		t.Fatalf("a misordered pod was still admitted after the MutatingAdmissionPolicyBinding was removed: last result %v", last)
	}
	if !apierrors.IsInvalid(last) || !strings.Contains(last.Error(), "must come before the native-sidecar istio-proxy") {
		t.Errorf("rejection %v: want Invalid, saying the wait container must come first", last)
	}
}

// tenantClient is an ordinary user: ServiceAccount "tenant" of ns, allowed to create and change pods
// and their status in ns.
func tenantClient(t *testing.T, ctx context.Context, c *cluster.Cluster, ns string) kubernetes.Interface {
	t.Helper()
	rbac := c.Client.RbacV1()
	mustCreate(t, func() error {
		_, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "tenant"}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := rbac.Roles(ns).Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "tenant"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "create", "update", "patch"}},
				{APIGroups: []string{""}, Resources: []string{"pods/status"}, Verbs: []string{"get", "update", "patch"}},
				{APIGroups: []string{""}, Resources: []string{"pods/binding", "bindings"}, Verbs: []string{"create"}},
			},
		}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := rbac.RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "tenant"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "tenant"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "tenant", Namespace: ns}},
		}, metav1.CreateOptions{})
		return err
	})
	tr, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "tenant", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return clientFor(t, c, tr.Status.Token)
}

// controllerClients returns the controller's ServiceAccount with a token bound to its pod on the
// cluster's node (as the kubelet mounts it), and with a token bound to no pod.
func controllerClients(t *testing.T, ctx context.Context, c *cluster.Cluster, in *harness.Install) (bound, unbound kubernetes.Interface) {
	t.Helper()
	token, err := c.PodToken(ctx, in.Pod, 0)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := c.Client.CoreV1().ServiceAccounts(in.Namespace).CreateToken(ctx, in.ServiceAccount, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return clientFor(t, c, token), clientFor(t, c, tr.Status.Token)
}

func clientFor(t *testing.T, c *cluster.Cluster, token string) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.ConfigForToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func plainPod(ns, name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}},
		},
	}
}

func createPod(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, name, node string) *corev1.Pod {
	t.Helper()
	p, err := cs.CoreV1().Pods(ns).Create(ctx, plainPod(ns, name, node), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// injectedPods reads test/injection/testdata/injected-<case>.yaml, by case.
func injectedPods(t *testing.T) map[string]*corev1.Pod {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(moduleRoot(t), "test", "injection", "testdata", "injected-*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no injected pods in test/injection/testdata (run go test ./... -update in test/injection): %v", err)
	}
	pods := map[string]*corev1.Pod{}
	for _, f := range files {
		pod, err := harness.LoadPod(f)
		if err != nil {
			t.Fatal(err)
		}
		pods[strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "injected-"), ".yaml")] = pod
	}
	return pods
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func mustCreate(t *testing.T, create func() error) {
	t.Helper()
	if err := create(); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// uniqueName returns prefix plus a random suffix: deleted namespaces stay Terminating here, and other
// tests may share the cluster.
func uniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

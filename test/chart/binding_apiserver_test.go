package chart

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
)

// testBindingPolicy: binding a pod copies the Binding's annotations onto it, through pods/binding
// and through the legacy bindings resource (POST /api/v1/namespaces/NS/bindings) alike. Either way a
// Binding carrying the controller's annotations is refused, and a plain one binds the pod with its
// annotations copied (which is why the policy must cover both).
func testBindingPolicy(t *testing.T, ctx context.Context, c *cluster.Cluster, tenant kubernetes.Interface, ns string) {
	for _, path := range []struct {
		name string
		bind func(*corev1.Binding) error
	}{
		{"pods/binding", func(b *corev1.Binding) error { return tenant.CoreV1().Pods(ns).Bind(ctx, b, metav1.CreateOptions{}) }},
		{"bindings", func(b *corev1.Binding) error {
			return tenant.CoreV1().RESTClient().Post().Namespace(ns).Resource("bindings").Body(b).Do(ctx).Error()
		}},
	} {
		pending := createPod(t, ctx, c.Client, ns, "unbound-"+strings.ReplaceAll(path.name, "/", "-"), "")
		binding := func(ann map[string]string) *corev1.Binding {
			return &corev1.Binding{
				ObjectMeta: metav1.ObjectMeta{Name: pending.Name, Annotations: ann},
				Target:     corev1.ObjectReference{Kind: "Node", Name: c.NodeName},
			}
		}
		err := path.bind(binding(map[string]string{contract.KeyStatus: "ready"}))
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "a Binding may not set pod-network-controller.istio.io/* annotations") {
			t.Errorf("%s: a Binding carrying a forged status annotation: %v, want the policy's refusal", path.name, err)
		}
		if err := path.bind(binding(map[string]string{"example.com/bound-by": "tenant"})); err != nil {
			t.Errorf("%s: a plain Binding: %v", path.name, err)
			continue
		}
		got, err := c.Client.CoreV1().Pods(ns).Get(ctx, pending.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Spec.NodeName != c.NodeName || got.Annotations["example.com/bound-by"] != "tenant" {
			t.Errorf("%s: bound pod on %q with annotations %v, want it on %s with the Binding's annotation copied", path.name, got.Spec.NodeName, got.Annotations, c.NodeName)
		}
		if _, ok := got.Annotations[contract.KeyStatus]; ok {
			t.Errorf("%s: the pod carries %s after the refused Binding", path.name, contract.KeyStatus)
		}
	}
}

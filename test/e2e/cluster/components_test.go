package cluster

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// TestControllerManagerSchedulerAndNodeIdentity: with Options.ControllerManager and Scheduler, a
// namespace created by hand gets its default ServiceAccount and kube-root-ca.crt (the cluster CA)
// from the controller-manager; a kubelet identity from NodeConfig may register its own Node and
// nothing else (NodeRestriction); a Deployment's pod is created by the ReplicaSet controller and
// bound to that Node by the scheduler.
func TestControllerManagerSchedulerAndNodeIdentity(t *testing.T) {
	c := StartForTest(t, Options{ControllerManager: true, Scheduler: true, NoNode: true})
	ctx := t.Context()
	if c.NodeName != "" {
		t.Errorf("NodeName %q with NoNode, want empty", c.NodeName)
	}
	if _, err := c.Client.CoreV1().Nodes().Get(ctx, DefaultNodeName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Node %s with NoNode: %v, want NotFound", DefaultNodeName, err)
	}

	ns := "components"
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the controller-manager's default ServiceAccount and kube-root-ca.crt in "+ns, func(ctx context.Context) bool {
		_, err := c.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		cm, cmErr := c.Client.CoreV1().ConfigMaps(ns).Get(ctx, RootCAConfigMap, metav1.GetOptions{})
		return err == nil && cmErr == nil && cm.Data["ca.crt"] == string(c.CAData)
	})

	cfg, err := c.NodeConfig("n1")
	if err != nil {
		t.Fatal(err)
	}
	kubelet, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	capacity := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi"), corev1.ResourcePods: resource.MustParse("10")}
	for _, name := range []string{"n1", "n2"} {
		_, err := kubelet.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		switch {
		case name == "n1" && err != nil:
			t.Fatalf("node identity n1 creating its own Node: %v", err)
		case name == "n2" && !apierrors.IsForbidden(err):
			t.Errorf("node identity n1 creating Node n2: %v, want Forbidden (NodeRestriction)", err)
		}
	}
	// The controller-manager's node controllers update the new Node too (taints, annotations), so
	// a status update can meet a conflict: re-read and retry, as a kubelet does.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := kubelet.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		node.Status = corev1.NodeStatus{
			Capacity: capacity, Allocatable: capacity,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}},
		}
		_, err = kubelet.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("node identity n1 updating its status: %v", err)
	}

	one := int32(1)
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1"}},
					// The not-ready taint stays until the node lifecycle controller sees heartbeats.
					Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				},
			},
		},
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the Deployment's pod scheduled to n1", func(ctx context.Context) bool {
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 1 && pods.Items[0].Spec.NodeName == "n1"
	})
}

func poll(t *testing.T, what string, cond func(context.Context) bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		return cond(ctx), nil
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
)

// Defaults of InstallOptions.
const (
	DefaultNamespace = "istio-system"
	DefaultRelease   = "istio-pod-network-controller"
	ChartPath        = "charts/istio-pod-network-controller"
	// tokenLifetime outlives any test run or demo.
	tokenLifetime = 6 * time.Hour
)

// InstallOptions configure Install.
type InstallOptions struct {
	// Namespace and Release of the Helm release (DefaultNamespace, DefaultRelease).
	Namespace, Release string
	// Values are extra `helm template --set` values.
	Values []string
	// Helm is the helm binary; "" builds or finds it with test/tools/build.sh.
	Helm string
	// Dir receives the controller's kubeconfig (controller.kubeconfig).
	Dir string
	// Log receives progress lines (tool builds). Nil discards them.
	Log io.Writer
}

// Install is the chart installed on the local control plane, with the controller's Pod object.
type Install struct {
	Namespace, Release string
	// Objects are everything the chart rendered (all applied).
	Objects []*unstructured.Unstructured
	// ServiceAccount is the controller's ServiceAccount name; User its user name.
	ServiceAccount, User string
	// Pod is the controller's Pod object on the node (from the DaemonSet's pod template): its
	// ServiceAccount token is bound to it.
	Pod *corev1.Pod
	// Kubeconfig is a kubeconfig file holding that token, for the controller binary.
	Kubeconfig string
	// Applier applies and deletes objects as the admin.
	Applier *Applier
}

// InstallChart renders the chart with the real helm, applies every object it renders (server-side,
// as admin: the ServiceAccount, exactly the chart's RBAC, the admission policies, the DaemonSet),
// creates the controller's Pod object on node c.NodeName from the DaemonSet's pod template, and
// writes a kubeconfig holding a token for the chart's ServiceAccount bound to that Pod.
func InstallChart(ctx context.Context, c *cluster.Cluster, opts InstallOptions) (*Install, error) {
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.Release == "" {
		opts.Release = DefaultRelease
	}
	if opts.Helm == "" {
		dir, err := cluster.BuildTools(ctx, opts.Log, "helm")
		if err != nil {
			return nil, err
		}
		opts.Helm = filepath.Join(dir, "helm")
	}
	root, err := ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	objs, err := Render(ctx, opts.Helm, filepath.Join(root, ChartPath), opts.Release, opts.Namespace, opts.Values...)
	if err != nil {
		return nil, err
	}
	in := &Install{Namespace: opts.Namespace, Release: opts.Release, Objects: objs}
	if in.Applier, err = NewApplier(c.AdminConfig()); err != nil {
		return nil, err
	}
	if _, err := c.EnsureNamespace(ctx, opts.Namespace, map[string]string{"pod-security.kubernetes.io/enforce": "privileged"}); err != nil {
		return nil, err
	}
	if err := in.Applier.Apply(ctx, objs...); err != nil {
		return nil, err
	}
	ds, err := daemonSet(objs)
	if err != nil {
		return nil, err
	}
	in.ServiceAccount = ds.Spec.Template.Spec.ServiceAccountName
	in.User = fmt.Sprintf("system:serviceaccount:%s:%s", opts.Namespace, in.ServiceAccount)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: opts.Namespace, Name: ds.Name + "-" + c.NodeName,
			Labels: ds.Spec.Template.Labels, Annotations: ds.Spec.Template.Annotations,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name,
				UID: ds.UID, Controller: ptr(true), BlockOwnerDeletion: ptr(true)}},
		},
		Spec: *ds.Spec.Template.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = c.NodeName
	if live, err := c.Client.AppsV1().DaemonSets(opts.Namespace).Get(ctx, ds.Name, metav1.GetOptions{}); err == nil {
		pod.OwnerReferences[0].UID = live.UID
	}
	err = c.Client.CoreV1().Pods(opts.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	if in.Pod, err = c.Client.CoreV1().Pods(opts.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create the controller's Pod object: %w", err)
	}
	token, err := c.PodToken(ctx, in.Pod, tokenLifetime)
	if err != nil {
		return nil, err
	}
	in.Kubeconfig = filepath.Join(opts.Dir, "controller.kubeconfig")
	if err := c.WriteKubeconfig(in.Kubeconfig, token); err != nil {
		return nil, err
	}
	return in, nil
}

// daemonSet finds the chart's DaemonSet among the rendered objects.
func daemonSet(objs []*unstructured.Unstructured) (*appsv1.DaemonSet, error) {
	list := OfKind(objs, "DaemonSet")
	if len(list) != 1 {
		return nil, fmt.Errorf("the chart rendered %d DaemonSets, want 1", len(list))
	}
	ds := &appsv1.DaemonSet{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list[0].Object, ds); err != nil {
		return nil, fmt.Errorf("the chart's DaemonSet: %w", err)
	}
	if ds.Spec.Template.Spec.ServiceAccountName == "" {
		return nil, errors.New("the chart's DaemonSet names no ServiceAccount")
	}
	return ds, nil
}

// AdmissionPolicyBindings returns the chart's ValidatingAdmissionPolicyBinding objects (delete them to
// run with admission off, apply them again to turn it back on).
func (in *Install) AdmissionPolicyBindings() []*unstructured.Unstructured {
	return OfKind(in.Objects, "ValidatingAdmissionPolicyBinding")
}

package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/realnode"
)

// The chart's release as the README installs it.
const (
	release      = "istio-pod-network-controller"
	controllerNS = "istio-system"
)

// realNode runs the demo on a real node: the images built here and imported into containerd, the
// chart installed with helm, the mesh pods made by Deployments from Istio's injector output.
func realNode(ctx context.Context, p *progress, dir string, hold bool, detail io.Writer) error {
	p.m = 5
	p.step("the controller and wait images (make build, the controller's Debian root file system: about 3 min on first use), kubectl")
	archives, err := realnode.BuildProjectImages(ctx, filepath.Join(dir, "images"), toolLog{detail})
	if err != nil {
		return err
	}
	tools, err := cluster.BuildTools(ctx, toolLog{detail}, "kubectl")
	if err != nil {
		return err
	}
	p.step("a real node: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet (built on first use)")
	n, err := realnode.Start(ctx, realnode.Options{Dir: filepath.Join(dir, "node"), Log: toolLog{detail}, Images: archives})
	if err != nil {
		return err
	}
	defer n.Stop()
	p.say("node %s (%s) Ready after %s; API server %s", n.Name, n.IP, n.BringUp.Round(100*time.Millisecond), n.Cluster.Host)
	c := n.Cluster.Client

	p.step("helm install %s charts/istio-pod-network-controller -n %s (local images, API server %s)", release, controllerNS, n.APIServerAddress())
	if _, err := n.HelmInstall(ctx, "", release, controllerNS); err != nil {
		return err
	}
	if err := waitReady(ctx, c, controllerNS, 1); err != nil {
		return fmt.Errorf("the controller's DaemonSet pod: %w%s", err, n.LogTail(20))
	}

	p.step("Deployments in namespace %q (Pod Security: restricted), pods as Istio's injector makes them with the chart's template; %q has a malformed annotation",
		namespace, refusedPod)
	if err := meshNamespace(ctx, n); err != nil {
		return err
	}
	start := time.Now()
	for name, replicas := range map[string]int32{inspected: 2, refusedPod: 1} {
		dep, err := realnode.MeshDeployment(ctx, namespace, name, replicas)
		if err != nil {
			return err
		}
		if name == refusedPod {
			dep.Spec.Template.Annotations["traffic.sidecar.istio.io/excludeOutboundPorts"] = "5432,postgres"
		}
		if _, err := c.AppsV1().Deployments(namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if err := follow(ctx, c, start, 3, 3*time.Minute); err != nil {
		return fmt.Errorf("%w%s", err, n.LogTail(20))
	}

	p.step("what an admin looks at")
	web, typo, err := podsOf(ctx, c)
	if err != nil {
		return err
	}
	a := admin{kubectl: filepath.Join(tools, "kubectl"), kubeconfig: n.Cluster.AdminKubeconfig,
		inspect: func(ctx context.Context, ns, pod string) (string, *exec.Cmd, error) {
			// In the controller's pod on the pod's node, as the README's troubleshooting does.
			ctrl, err := c.CoreV1().Pods(controllerNS).List(ctx, metav1.ListOptions{
				LabelSelector: "app.kubernetes.io/name=istio-pod-network-controller", FieldSelector: "spec.nodeName=" + n.Name})
			if err != nil || len(ctrl.Items) != 1 {
				return "", nil, fmt.Errorf("the controller's pod on node %s: %d pods, %v", n.Name, len(ctrl.Items), err)
			}
			args := []string{"-n", controllerNS, "exec", "pod/" + ctrl.Items[0].Name, "--", "istio-pod-network-controller", "inspect", "-n", ns, pod}
			cmd := exec.CommandContext(ctx, filepath.Join(tools, "kubectl"), args...)
			cmd.Env = append(cmd.Environ(), "KUBECONFIG="+n.Cluster.AdminKubeconfig)
			return "kubectl " + strings.Join(args, " "), cmd, nil
		}}
	if err := a.show(ctx, web, typo); err != nil {
		return err
	}
	holdOn(ctx, p, hold, n.Cluster.AdminKubeconfig, n.Dir)
	p.say("stopping: the node's pods, kubelet, containerd (sandboxes, namespaces, bridge, cgroups), control plane; host settings restored")
	return nil
}

// meshNamespace creates the demo namespace enforcing Pod Security "restricted", with the istiod CA
// ConfigMap the injected pods mount.
func meshNamespace(ctx context.Context, n *realnode.Node) error {
	c := n.Cluster.Client
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: namespace, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"},
	}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := c.CoreV1().ConfigMaps(namespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-ca-root-cert"}, Data: map[string]string{"root-cert.pem": string(n.Cluster.CAData)},
	}, metav1.CreateOptions{})
	return err
}

// waitReady waits until namespace has want pods, all Ready.
func waitReady(ctx context.Context, c kubernetes.Interface, ns string, want int) error {
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) != want {
			return false, nil
		}
		for _, p := range list.Items {
			ready := false
			for _, cond := range p.Status.Conditions {
				ready = ready || cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue
			}
			if !ready {
				return false, nil
			}
		}
		return true, nil
	})
}

// podsOf returns the name of the first pod of each demo Deployment, in name order.
func podsOf(ctx context.Context, c kubernetes.Interface) (string, string, error) {
	list, err := c.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", "", err
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	first := map[string]string{}
	for _, p := range list.Items {
		if app := p.Labels["app"]; first[app] == "" {
			first[app] = p.Name
		}
	}
	if first[inspected] == "" || first[refusedPod] == "" {
		return "", "", fmt.Errorf("no pod of Deployment %s or %s in namespace %s", inspected, refusedPod, namespace)
	}
	return first[inspected], first[refusedPod], nil
}

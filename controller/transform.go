package controller

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

// TrimPod returns the pod informer's transform: each cached pod keeps only what the controller
// reads: selection (skipReason, candidate, relevantChange, the wait container's status), the pod
// to configuration mapping (podconfig.FromPod) and the fingerprint. Everything else (managed
// fields, labels, other annotations, other containers' specs and statuses, conditions, volumes) is
// dropped, so a node's pods cost the controller little memory whatever they carry. The fuzzed
// guard test (FuzzTrimPod) checks that those functions give identical results on trimmed and full
// pods.
func TrimPod(waitContainer string) cache.TransformFunc {
	return func(obj any) (any, error) {
		switch o := obj.(type) {
		case *corev1.Pod:
			return trimPod(o, waitContainer), nil
		case cache.DeletedFinalStateUnknown:
			if pod, ok := o.Obj.(*corev1.Pod); ok {
				o.Obj = trimPod(pod, waitContainer)
			}
			return o, nil
		}
		return obj, nil
	}
}

// keptAnnotations are the annotations the controller reads: FromPod's and its own.
var keptAnnotations = slices.Concat(istioapi.Annotations, contract.Keys)

// trimPod returns a new pod holding only what the controller reads of pod.
func trimPod(pod *corev1.Pod, wait string) *corev1.Pod {
	out := &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion,
			CreationTimestamp: pod.CreationTimestamp, DeletionTimestamp: pod.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{NodeName: pod.Spec.NodeName, HostNetwork: pod.Spec.HostNetwork},
		Status: corev1.PodStatus{
			Phase:  pod.Status.Phase,
			PodIP:  pod.Status.PodIP,
			PodIPs: pod.Status.PodIPs,
		},
	}
	for _, k := range keptAnnotations {
		if v, ok := pod.Annotations[k]; ok {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	if len(pod.Spec.InitContainers) > 0 {
		out.Spec.InitContainers = make([]corev1.Container, len(pod.Spec.InitContainers))
		for i := range pod.Spec.InitContainers {
			out.Spec.InitContainers[i] = trimContainer(&pod.Spec.InitContainers[i])
		}
	}
	if len(pod.Spec.Containers) > 0 {
		out.Spec.Containers = make([]corev1.Container, len(pod.Spec.Containers))
		for i := range pod.Spec.Containers {
			out.Spec.Containers[i] = trimContainer(&pod.Spec.Containers[i])
		}
	}
	for _, s := range pod.Status.InitContainerStatuses {
		if s.Name == wait {
			out.Status.InitContainerStatuses = append(out.Status.InitContainerStatuses, corev1.ContainerStatus{
				Name: s.Name, ContainerID: s.ContainerID, State: corev1.ContainerState{Running: s.State.Running}})
		}
	}
	return out
}

// trimContainer keeps a container's name and restart policy (a native sidecar is an init
// container with restartPolicy Always) and, for istio-proxy, what FromPod reads: the user and
// group it runs as and the literal values of the environment variables FromPod reads.
func trimContainer(c *corev1.Container) corev1.Container {
	out := corev1.Container{Name: c.Name, RestartPolicy: c.RestartPolicy}
	if c.Name != podconfig.ProxyContainer {
		return out
	}
	if sc := c.SecurityContext; sc != nil {
		out.SecurityContext = &corev1.SecurityContext{RunAsUser: sc.RunAsUser, RunAsGroup: sc.RunAsGroup}
	}
	for _, e := range c.Env {
		if slices.Contains(proxyEnv, e.Name) {
			out.Env = append(out.Env, corev1.EnvVar{Name: e.Name, Value: e.Value})
		}
	}
	return out
}

// proxyEnv are the istio-proxy environment variables FromPod reads.
var proxyEnv = []string{podconfig.EnvDNSCapture, podconfig.EnvInvalidDrop, podconfig.EnvDualStack}

package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

// Init containers that install Istio's rules themselves (istio-init) or check them (istio-validation,
// with Istio's CNI): with them, two rule sets would both be live.
var conflictingInitContainers = []string{"istio-init", "istio-validation"}

// candidate reports whether pod is one the controller may program: it carries the wait init
// container and is not hostNetwork. Both are immutable, so the event handlers filter on it.
func (c *Controller) candidate(pod *corev1.Pod) bool { return isCandidate(pod, c.waitContainer) }

func isCandidate(pod *corev1.Pod, wait string) bool {
	return !pod.Spec.HostNetwork && hasInitContainer(pod, wait)
}

// skipReason says why the controller of node does not work on pod now ("" = it does).
func skipReason(pod *corev1.Pod, node, wait string) string {
	switch {
	case pod.Spec.NodeName != node:
		return "scheduled on another node"
	case !isCandidate(pod, wait):
		return "no wait init container, or hostNetwork"
	case pod.DeletionTimestamp != nil:
		return "terminating"
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return "finished"
	case len(podconfig.PodIPs(pod)) == 0:
		return whyNoIP
	}
	return ""
}

func hasInitContainer(pod *corev1.Pod, name string) bool {
	return slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == name })
}

// conflictingInit returns the name of an init container that installs or checks Istio's rules itself.
func conflictingInit(pod *corev1.Pod) string {
	for _, name := range conflictingInitContainers {
		if hasInitContainer(pod, name) {
			return name
		}
	}
	return ""
}

// waitRunning returns the container ID of the wait init container while it runs, else "".
func waitRunning(pod *corev1.Pod, wait string) string {
	for _, s := range pod.Status.InitContainerStatuses {
		if s.Name == wait && s.State.Running != nil {
			if s.ContainerID != "" {
				return s.ContainerID
			}
			return "running@" + s.State.Running.StartedAt.UTC().String()
		}
	}
	return ""
}

// fingerprint summarizes the inputs of a pod's rules, what FromPod reads: the Istio annotations
// it maps, the istio-proxy container's user, group and environment, the init containers' names
// and the pod IPs. A failed pod is not looked at again until it changes. It reads nothing the
// informer transform (TrimPod) drops.
func fingerprint(pod *corev1.Pod) string {
	h := sha256.New()
	for _, k := range istioapi.Annotations { // a fixed order
		if v, ok := pod.Annotations[k]; ok {
			h.Write([]byte(k + "\x00" + v + "\x00"))
		}
	}
	h.Write([]byte{1})
	if p := podconfig.Proxy(pod); p != nil {
		data, _ := json.Marshal(trimContainer(p))
		h.Write(data)
	}
	h.Write([]byte{1})
	for _, ic := range pod.Spec.InitContainers {
		h.Write([]byte(ic.Name + "\x00"))
	}
	h.Write([]byte{1})
	for _, ip := range podconfig.PodIPs(pod) {
		h.Write([]byte(ip.String() + "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// relevantChange reports whether an update may change what the controller does with the pod.
// Status-only updates of other containers, and resourceVersion bumps, are not.
func (c *Controller) relevantChange(old, cur *corev1.Pod) bool {
	return old.UID != cur.UID ||
		!ours(old).equal(ours(cur)) ||
		fingerprint(old) != fingerprint(cur) ||
		(old.DeletionTimestamp == nil) != (cur.DeletionTimestamp == nil) ||
		old.Status.Phase != cur.Status.Phase ||
		waitRunning(old, c.waitContainer) != waitRunning(cur, c.waitContainer)
}

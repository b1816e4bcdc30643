package controller

import (
	"context"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// What the controller remembers per pod, and its lifecycle: first sight, state, what it last
// wrote, and forgetting a deleted pod.

// noteSeen records when a pod not yet released is first seen with an IP (setup latency).
func (c *Controller) noteSeen(pod *corev1.Pod) {
	if (len(pod.Status.PodIPs) == 0 && pod.Status.PodIP == "") || ours(pod).status() == contract.StatusReady {
		return
	}
	c.mu.Lock()
	if _, ok := c.seen[pod.UID]; !ok {
		c.seen[pod.UID] = c.now()
	}
	c.mu.Unlock()
}

// observeSetup records the setup latency of a pod released for the first time.
func (c *Controller) observeSetup(uid types.UID) {
	c.mu.Lock()
	t := c.seen[uid]
	if !t.IsZero() {
		c.seen[uid] = time.Time{}
	}
	c.mu.Unlock()
	if !t.IsZero() {
		c.metrics.SetupLatency.Observe(c.now().Sub(t).Seconds())
	}
}

// state returns the pod's state, forgetting an earlier pod of the same name.
func (c *Controller) state(ctx context.Context, key Key, uid types.UID) *podState {
	c.mu.Lock()
	old := c.pods[key]
	st := old
	if st == nil || st.uid != uid {
		st = &podState{uid: uid}
		c.pods[key] = st
	}
	c.mu.Unlock()
	if old != nil && old.uid != uid {
		klog.FromContext(ctx).V(2).Info("Pod re-created under the same name: forgetting the old one", "oldUID", old.uid, "uid", uid)
		c.forgetUID(old.uid)
	}
	return st
}

// forget drops everything known of a deleted pod: state, namespace claim, cached namespace fd,
// lock file.
func (c *Controller) forget(ctx context.Context, key Key) {
	c.claims.drop(key, "")
	c.mu.Lock()
	st := c.pods[key]
	delete(c.pods, key)
	c.mu.Unlock()
	if st != nil {
		klog.FromContext(ctx).V(2).Info("Pod deleted: forgetting it", "uid", st.uid)
		c.forgetUID(st.uid)
	}
}

func (c *Controller) forgetUID(uid types.UID) {
	c.finder.Forget(string(uid))
	c.applier.Forget(string(uid))
	if c.local != nil {
		c.local.forget(uid)
	}
	c.mu.Lock()
	delete(c.seen, uid)
	delete(c.written, uid)
	c.mu.Unlock()
}

// lastWritten returns the annotations last patched on the pod (nil: none by this process).
func (c *Controller) lastWritten(uid types.UID) annotations {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.written[uid]
}

func (c *Controller) setWritten(uid types.UID, a annotations) {
	c.mu.Lock()
	c.written[uid] = a
	c.mu.Unlock()
}

// ownPatch reports whether the update is only our own last patch arriving through the watch.
func (c *Controller) ownPatch(old, cur *corev1.Pod) bool {
	if old.UID != cur.UID || ours(old).equal(ours(cur)) {
		return false
	}
	w := c.lastWritten(cur.UID)
	if w == nil || !w.equal(ours(cur)) {
		return false
	}
	// Nothing else that matters changed: old with cur's annotations of ours is no relevant change.
	probe := *old // shallow: only the annotations field is replaced, nothing is mutated
	probe.Annotations = make(map[string]string, len(old.Annotations))
	maps.Copy(probe.Annotations, old.Annotations)
	for _, k := range contract.Keys {
		delete(probe.Annotations, k)
	}
	maps.Copy(probe.Annotations, ours(cur))
	return !c.relevantChange(&probe, cur)
}

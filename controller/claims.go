package controller

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// claims maps a network namespace identity (the netns annotation value, cookie:<n>) to the one
// live pod released into it. A namespace claimed by a pod is never programmed, verified or
// annotated for another: whatever a second pod's status says (a forged or reused IP), the first
// pod keeps it until it is deleted or finishes. The map is rebuilt at start-up from the released
// pods' netns annotations (which only the controller may write: the chart's admission policy)
// before the first reconcile, so a restart forgets no claim.
type claims struct {
	mu      sync.Mutex
	byNetns map[string]claimant
	byKey   map[Key]claimed
}

// claimant is the pod holding a claim.
type claimant struct {
	key Key
	uid types.UID
}

func (o claimant) String() string {
	return fmt.Sprintf("%s/%s (UID %s)", o.key.Namespace, o.key.Name, o.uid)
}

// claimed is the claim a pod (by key) holds.
type claimed struct {
	uid   types.UID
	netns string
}

func newClaims() *claims {
	return &claims{byNetns: map[string]claimant{}, byKey: map[Key]claimed{}}
}

// owner returns the pod holding netns, if any.
func (cl *claims) owner(netns string) (claimant, bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	o, ok := cl.byNetns[netns]
	return o, ok
}

// claim makes netns the pod's (key, uid), dropping the pod's earlier claim (a re-created sandbox).
// When another pod holds netns it changes nothing and returns that pod.
func (cl *claims) claim(netns string, key Key, uid types.UID) (claimant, bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if o, ok := cl.byNetns[netns]; ok && o.uid != uid {
		return o, false
	}
	if old, ok := cl.byKey[key]; ok {
		delete(cl.byNetns, old.netns)
	}
	cl.byNetns[netns] = claimant{key: key, uid: uid}
	cl.byKey[key] = claimed{uid: uid, netns: netns}
	return claimant{}, true
}

// drop removes the claim of the pod named key, unless it is held by the pod with UID keep (the
// current pod of that name; "" drops it whatever pod holds it).
func (cl *claims) drop(key Key, keep types.UID) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if c, ok := cl.byKey[key]; ok && (keep == "" || c.uid != keep) {
		delete(cl.byKey, key)
		delete(cl.byNetns, c.netns)
	}
}

// len is the number of claims.
func (cl *claims) len() int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return len(cl.byNetns)
}

// holdsClaim reports whether a pod still holds a claim on its namespace: it is the node's, and
// its sandbox may live (not finished). A terminating pod still holds it.
func holdsClaim(pod *corev1.Pod, node string) bool {
	return pod.Spec.NodeName == node && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// rebuildClaims claims, for every released pod of the node in the informer cache, the namespace
// its netns annotation names. Two pods naming the same namespace (which only a controller without
// claims could have caused) leave it to the older pod; the younger one is logged and then refused
// like any pod whose namespace another pod holds.
func (c *Controller) rebuildClaims(ctx context.Context) error {
	pods, err := c.lister.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("rebuild the namespace claims: list the pods: %w", err)
	}
	slices.SortFunc(pods, func(a, b *corev1.Pod) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time),
			cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	logger := klog.FromContext(ctx)
	for _, pod := range pods {
		cur := ours(pod)
		if !c.candidate(pod) || !holdsClaim(pod, c.nodeName) || cur.status() != contract.StatusReady {
			continue
		}
		id, err := contract.ParseNetnsID(cur[contract.KeyNetns])
		if err != nil {
			logger.Info("Released pod with an unreadable netns annotation: no claim", "pod", klog.KObj(pod), "err", err.Error())
			continue
		}
		key := Key{Namespace: pod.Namespace, Name: pod.Name}
		if o, ok := c.claims.claim(id.String(), key, pod.UID); !ok {
			logger.Info("Two released pods name the same network namespace: the older one keeps it",
				"pod", klog.KObj(pod), "netns", id.String(), "holder", o.String())
		}
	}
	logger.V(2).Info("Namespace claims rebuilt from the released pods", "claims", c.claims.len())
	return nil
}

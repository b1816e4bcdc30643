package controller

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
)

// Local discovery: the controller watches the node's CNI result cache (libcni writes one record
// per sandbox and interface right after CNI ADD, naming the pod UID, the netns path and the IPs),
// so that a new sandbox is programmed as soon as it has its network, without waiting for the
// kubelet to report the pod IP to the API server, and also while the API server is unreachable
// (the pod's spec is in the informer cache). A record is only a trigger and a hint: the finder
// proves the namespace as for every pod (docs/design.md, "Local discovery").

// whyNoIP is skipReason's reason for a pod without an IP in its status.
const whyNoIP = "no pod IP yet"

// localSandboxes is what the CNI result cache says about this node's sandboxes. Safe for
// concurrent use: the watch writes it, workers read it.
type localSandboxes struct {
	mu sync.Mutex
	// byFile is every record read, by file name.
	byFile map[string]localRecord
	// handled is the sandbox ID each pod's worker last looked up.
	handled map[types.UID]string
}

// localRecord is one record: the pod, its sandbox, the sandbox's addresses on that interface, and
// when it was written (the newest sandbox of a pod is the live one).
type localRecord struct {
	uid     types.UID
	sandbox string
	ips     []netip.Addr
	written time.Time
}

func newLocalSandboxes() *localSandboxes {
	return &localSandboxes{byFile: map[string]localRecord{}, handled: map[types.UID]string{}}
}

// put stores the record read from file; false when the limit of records is reached.
func (l *localSandboxes) put(file string, rec netns.CNIRecord, written time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.byFile[file]; !ok && len(l.byFile) >= netns.MaxCNIRecordFiles {
		return false
	}
	l.byFile[file] = localRecord{uid: types.UID(rec.PodUID), sandbox: rec.SandboxID, ips: rec.IPs, written: written}
	return true
}

// remove drops the record of file (CNI DEL).
func (l *localSandboxes) remove(file string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.byFile, file)
}

// latest returns the pod's newest sandbox and its addresses (over all its interfaces' records).
func (l *localSandboxes) latest(uid types.UID) (string, []netip.Addr, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best localRecord
	for _, r := range l.byFile {
		if r.uid == uid && (best.sandbox == "" || r.written.After(best.written)) {
			best = r
		}
	}
	if best.sandbox == "" {
		return "", nil, false
	}
	var ips []netip.Addr
	for _, r := range l.byFile {
		if r.uid == uid && r.sandbox == best.sandbox {
			ips = append(ips, r.ips...)
		}
	}
	slices.SortFunc(ips, func(a, b netip.Addr) int { return a.Compare(b) }) // IPv4 first, as podIPs
	return best.sandbox, slices.Compact(ips), true
}

// changed reports whether the pod's newest sandbox differs from the one its worker looked up last
// (a re-created sandbox), and records the newest as looked up.
func (l *localSandboxes) changed(uid types.UID) bool {
	sb, _, ok := l.latest(uid)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !ok {
		return false
	}
	prev, seen := l.handled[uid]
	l.handled[uid] = sb
	return seen && prev != sb
}

// forget drops what is kept for the pod's worker (the pod is gone).
func (l *localSandboxes) forget(uid types.UID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.handled, uid)
}

// knows reports whether the cache has a record of the pod.
func (c *Controller) knowsLocally(uid types.UID) bool {
	if c.local == nil {
		return false
	}
	_, _, ok := c.local.latest(uid)
	return ok
}

// skipped is skipReason with local discovery: a pod without an IP in its status is worked on when
// the CNI result cache has a record of its sandbox.
func (c *Controller) skipped(pod *corev1.Pod) string {
	why := skipReason(pod, c.nodeName, c.waitContainer)
	if why == whyNoIP && c.knowsLocally(pod.UID) {
		return ""
	}
	return why
}

// hint returns the addresses to look for the pod's namespace with: those of its newest sandbox in
// the CNI result cache when there is one (the live sandbox, possibly newer than the status), else
// status.podIPs.
func (r *podRun) hint() []netip.Addr {
	if r.c.local != nil {
		if _, ips, ok := r.c.local.latest(r.pod.UID); ok && len(ips) > 0 {
			return ips
		}
	}
	return podconfig.PodIPs(r.pod)
}

// localRecreated drops the finder's cached namespace of the pod when the CNI result cache shows a
// sandbox newer than the one last looked up: the sandbox was re-created, maybe while the API
// server (and so the wait container's status) was out of reach.
func (r *podRun) localRecreated() {
	if r.c.local == nil || !r.c.local.changed(r.pod.UID) {
		return
	}
	r.logger().V(2).Info("New sandbox in the CNI result cache: looking for a new network namespace")
	r.c.finder.Forget(r.key())
}

// enqueueLocal queues the local pod of uid, if the informer has it; otherwise its add event will.
func (c *Controller) enqueueLocal(logger klog.Logger, uid types.UID) {
	pods, err := c.lister.List(labels.Everything())
	if err != nil {
		return
	}
	for _, p := range pods {
		if p.UID == uid {
			if c.candidate(p) {
				logger.V(4).Info("CNI result record: queueing the pod", "pod", klog.KObj(p))
				c.queue.Add(Key{Namespace: p.Namespace, Name: p.Name})
			}
			return
		}
	}
}

// localCNIDir is the CNI result cache watched with --local-discovery ("" when off).
func (c *Config) localCNIDir() string {
	if !c.LocalDiscovery {
		return ""
	}
	return c.CNIResultsDir
}

// localNewer reports whether the CNI result cache shows a sandbox of the pod that its worker has
// not looked up yet (an up-to-date pod must be looked at again).
func (c *Controller) localNewer(uid types.UID) bool {
	if c.local == nil {
		return false
	}
	sb, _, ok := c.local.latest(uid)
	c.local.mu.Lock()
	defer c.local.mu.Unlock()
	return ok && c.local.handled[uid] != sb
}

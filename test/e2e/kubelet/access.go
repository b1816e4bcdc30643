package kubelet

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

// Accessors for tests: a pod's sandbox, timeline, namespace and wait logs.

// find returns the state of the pod with UID uid.
func (k *Kubelet) find(uid types.UID) *podState {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, st := range k.pods {
		if st.uid == uid {
			return st
		}
	}
	return nil
}

// Sandbox returns the current sandbox of the pod with UID uid.
func (k *Kubelet) Sandbox(uid types.UID) (Sandbox, bool) {
	st := k.find(uid)
	if st == nil {
		return Sandbox{}, false
	}
	st.infoMu.Lock()
	defer st.infoMu.Unlock()
	return st.info, st.info.ID != ""
}

// Timeline returns what happened to the pod's current sandbox, and when.
func (k *Kubelet) Timeline(uid types.UID) (Timeline, bool) {
	st := k.find(uid)
	if st == nil {
		return Timeline{}, false
	}
	st.infoMu.Lock()
	defer st.infoMu.Unlock()
	return st.tl, true
}

// OpenNetns opens the current network namespace of the pod with UID uid; the caller closes it.
func (k *Kubelet) OpenNetns(uid types.UID) (*netns.Handle, error) {
	st := k.find(uid)
	if st == nil {
		return nil, fmt.Errorf("pod UID %q: not simulated", uid)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sb == nil || st.sb.ns == nil {
		return nil, fmt.Errorf("pod UID %q: no network namespace of its own", uid)
	}
	return netns.Open(fmt.Sprintf("/proc/self/fd/%d", st.sb.ns.Fd()))
}

// WaitLogs returns the output of every run of the pod's wait container so far.
func (k *Kubelet) WaitLogs(uid types.UID) string {
	st := k.find(uid)
	if st == nil {
		return ""
	}
	var b strings.Builder
	for run := range st.runCount() {
		data, _ := os.ReadFile(filepath.Join(st.dir, fmt.Sprintf("%s-%d.log", k.opts.WaitContainerName, run)))
		fmt.Fprintf(&b, "--- run %d ---\n%s", run, data)
	}
	return b.String()
}

func (st *podState) runCount() int32 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.runs
}

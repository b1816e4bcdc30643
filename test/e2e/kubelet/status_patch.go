package kubelet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Status: the pod status the simulator writes to the API server.

// writeStatus patches the pod status through the status subresource when it changed.
func (k *Kubelet) writeStatus(pod *corev1.Pod, st *podState) error {
	in := statusInput{pod: pod, waitName: k.opts.WaitContainerName, hostIP: k.nodeIP, startTime: st.start, wait: st.run}
	if st.sb != nil {
		in.podIPs, in.sandboxReady, in.sandboxID = st.sb.info.IPs, st.sb.ready, st.sb.info.ID
	}
	status := buildStatus(in)
	// metadata.uid makes the patch conditional on the pod being this one, as the kubelet does.
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": st.uid}, "status": status})
	if err != nil {
		return err
	}
	if bytes.Equal(body, st.written) {
		return nil
	}
	_, err = k.opts.Client.CoreV1().Pods(pod.Namespace).Patch(k.ctx, pod.Name, types.MergePatchType, body, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // deleted or replaced: the informer will tell
	}
	if err != nil {
		return fmt.Errorf("patch status: %w", err)
	}
	st.written = body
	now := time.Now()
	st.infoMu.Lock()
	if st.tl.IPPublished.IsZero() && len(in.podIPs) > 0 {
		st.tl.IPPublished = now
	}
	released := in.released()
	if released && st.tl.Released.IsZero() {
		st.tl.Released = now
	}
	st.infoMu.Unlock()
	if released && hasInitContainer(pod, k.opts.WaitContainerName) {
		k.logf("%s: released (Running)", st.key)
	}
	return nil
}

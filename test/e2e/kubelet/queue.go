package kubelet

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// The work queue: the informer enqueues pods of the node, sync brings each one's sandbox, wait
// container and status in line with its spec.

// observe is the informer's add/update handler: it records when a pod's namespace is annotated
// ready, then enqueues the pod.
func (k *Kubelet) observe(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := pod.Namespace + "/" + pod.Name
	k.mu.Lock()
	st := k.pods[key]
	k.mu.Unlock()
	if st != nil && st.uid == pod.UID {
		st.infoMu.Lock()
		if st.tl.Annotated.IsZero() && st.info.NetnsID != "" &&
			pod.Annotations[contract.KeyStatus] == string(contract.StatusReady) &&
			pod.Annotations[contract.KeyNetns] == st.info.NetnsID {
			st.tl.Annotated = time.Now()
		}
		st.infoMu.Unlock()
	}
	k.queue.Add(key)
}

func (k *Kubelet) processNext() bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	if err := k.sync(key); err != nil {
		if k.ctx.Err() == nil {
			k.logf("%s: %v (retrying)", key, err)
			k.queue.AddRateLimited(key)
		}
		return true
	}
	k.queue.Forget(key)
	return true
}

// state returns the state of pod, replacing the state of an earlier pod of the same name.
func (k *Kubelet) state(pod *corev1.Pod) *podState {
	key := pod.Namespace + "/" + pod.Name
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return nil
	}
	st := k.pods[key]
	if st != nil && st.uid == pod.UID {
		k.mu.Unlock()
		return st
	}
	if st != nil {
		delete(k.pods, key)
	}
	now := time.Now()
	nst := &podState{key: key, uid: pod.UID, volumes: map[string][]byte{}, start: now,
		dir: filepath.Join(k.stateDir, "pods", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID))}
	nst.tl.Seen = now
	k.pods[key] = nst
	k.mu.Unlock()
	if st != nil {
		k.remove(st)
	}
	return nst
}

// remove tears a pod's state down for good.
func (k *Kubelet) remove(st *podState) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gone {
		return
	}
	st.gone = true
	k.teardownSandbox(st, false)
	removeCgroupDirs(st.cgroups)
	_ = os.RemoveAll(st.dir)
}

func (k *Kubelet) sync(key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := k.lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		k.mu.Lock()
		st := k.pods[key]
		delete(k.pods, key)
		k.mu.Unlock()
		if st != nil {
			k.remove(st)
			k.logf("%s: gone, sandbox removed", key)
		}
		return nil
	}
	if err != nil {
		return err
	}
	st := k.state(pod)
	if st == nil {
		return nil // stopping
	}
	if pod.DeletionTimestamp != nil {
		k.remove(st)
		// The kubelet confirms a deletion once the pod's containers are gone.
		err := k.opts.Client.CoreV1().Pods(ns).Delete(k.ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr(int64(0)), Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("confirm deletion: %w", err)
		}
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gone {
		return nil
	}
	return k.syncLocked(pod, st)
}

// syncLocked brings a pod's sandbox, volumes, wait container and status up to date. st.mu is held.
func (k *Kubelet) syncLocked(pod *corev1.Pod, st *podState) error {
	// Nothing to do for a pod that succeeded, nor for a failed one without a sandbox.
	if pod.Status.Phase == corev1.PodSucceeded || (pod.Status.Phase == corev1.PodFailed && st.sb == nil) {
		return nil
	}
	if st.sb == nil {
		if !st.pending {
			st.pending = true
			k.wg.Go(func() { k.createAsync(st, pod.DeepCopy()) })
		}
		return nil
	}
	waitC := initContainer(pod, k.opts.WaitContainerName)
	if waitC != nil {
		if err := k.publishVolumes(pod, st, waitC); err != nil {
			return err
		}
		if st.run.phase == runNotStarted {
			if err := k.startWait(pod, st, waitC); err != nil {
				return err
			}
		}
	}
	return k.writeStatus(pod, st)
}

func podNamespace(key string) string { ns, _, _ := strings.Cut(key, "/"); return ns }

func podName(key string) string { _, n, _ := strings.Cut(key, "/"); return n }

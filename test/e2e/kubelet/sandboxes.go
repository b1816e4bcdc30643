package kubelet

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Sandboxes: creating, tearing down and re-creating a pod's network namespace and pause process.

// createAsync creates the pod's sandbox when a creation slot is free, then has the pod synced.
func (k *Kubelet) createAsync(st *podState, pod *corev1.Pod) {
	select {
	case k.create <- struct{}{}:
	case <-k.ctx.Done():
		return
	}
	defer func() { <-k.create }()
	st.mu.Lock()
	st.pending = false
	var err error
	if !st.gone && st.sb == nil {
		err = k.createSandbox(pod, st)
	}
	st.mu.Unlock()
	if err != nil {
		k.logf("%s: %v (retrying)", st.key, err)
		k.queue.AddRateLimited(st.key)
		return
	}
	k.queue.Add(st.key)
}

// createSandbox allocates the pod's IPs and creates its namespace and pause process.
func (k *Kubelet) createSandbox(pod *corev1.Pod, st *podState) error {
	dual, err := ipFamilies(pod)
	if err != nil {
		k.logf("%s: %v: giving it IPv4 only", st.key, err)
	}
	host := pod.Spec.HostNetwork
	var ips []netip.Addr
	if host {
		ip, err := netip.ParseAddr(k.nodeIP)
		if err != nil {
			return fmt.Errorf("node IP %q: %w", k.nodeIP, err)
		}
		ips = []netip.Addr{ip}
	} else {
		if !st.hasIP {
			k.mu.Lock()
			st.offset, err = k.alloc.allocate()
			k.mu.Unlock()
			if err != nil {
				return err
			}
			st.hasIP = true
		}
		ips = k.alloc.ips(st.offset, dual)
	}
	if err := os.MkdirAll(st.dir, 0o755); err != nil {
		return err
	}
	if st.cgroups == nil {
		if st.cgroups, err = k.makePodCgroups(pod); err != nil {
			return err
		}
	}
	sb := &sandbox{info: Sandbox{ID: newSandboxID(), Generation: st.gen + 1, HostNetwork: host, IPs: ips}, cgroups: st.cgroups}
	if err := k.netw.create(sb, pod.Annotations[AnnotationRegisterNetns] != "false", filepath.Join(st.dir, "pause.log")); err != nil {
		return fmt.Errorf("create sandbox: %w", err)
	}
	if !host && pod.Annotations[AnnotationCNIRecord] != "false" {
		if err := k.writeCNIRecord(pod, sb); err != nil {
			k.netw.destroy(sb)
			return fmt.Errorf("create sandbox: %w", err)
		}
	}
	now := time.Now()
	sb.ready = now
	st.sb = sb
	st.gen = sb.info.Generation
	st.written = nil
	st.infoMu.Lock()
	st.info = sb.info
	if st.gen > 1 {
		st.tl = Timeline{Seen: now}
	}
	st.tl.SandboxReady = now
	st.infoMu.Unlock()
	k.logf("%s: sandbox %d up: netns %s (%s), IPs %v", st.key, st.gen, sb.info.NetnsPath, sb.info.NetnsID, ips)
	return nil
}

// teardownSandbox kills the pod's processes and removes its namespace; keepIP keeps the pod's
// address offset for the next sandbox.
func (k *Kubelet) teardownSandbox(st *podState, keepIP bool) {
	if st.wait != nil {
		st.wait.kill()
		st.wait = nil
	}
	if st.sb != nil {
		k.removeCNIRecord(st.sb) // CNI DEL, before the namespace goes
		k.netw.destroy(st.sb)
		st.sb = nil
		st.infoMu.Lock()
		st.info = Sandbox{}
		st.infoMu.Unlock()
	}
	if !keepIP && st.hasIP {
		k.mu.Lock()
		k.alloc.release(st.offset)
		k.mu.Unlock()
		st.hasIP = false
	}
}

// rootfs is the wait container's root file system: the binary, its volumes, its termination log.
func (st *podState) rootfs() string { return filepath.Join(st.dir, "rootfs") }

// Recreate replaces the sandbox of the pod with UID uid, as the kubelet does when a sandbox dies: a
// new network namespace (keeping the pod's IPs unless newIP), the wait container running again
// (after the old one is killed), and the status saying so. It returns once the new sandbox runs.
func (k *Kubelet) Recreate(ctx context.Context, uid types.UID, newIP bool) (Sandbox, error) {
	st := k.find(uid)
	if st == nil {
		return Sandbox{}, fmt.Errorf("recreate: pod UID %q: not simulated", uid)
	}
	pod, err := k.lister.Pods(podNamespace(st.key)).Get(podName(st.key))
	if err != nil {
		return Sandbox{}, fmt.Errorf("recreate %s: %w", st.key, err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gone || st.sb == nil {
		return Sandbox{}, fmt.Errorf("recreate %s: it has no sandbox", st.key)
	}
	if st.sb.info.HostNetwork {
		return Sandbox{}, fmt.Errorf("recreate %s: a hostNetwork pod has no sandbox namespace to replace", st.key)
	}
	k.teardownSandbox(st, !newIP)
	st.run = containerRun{restarts: st.runs}
	k.logf("%s: sandbox %d removed, re-creating (new IP: %t)", st.key, st.gen, newIP)
	for {
		err := k.createSandbox(pod, st)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return Sandbox{}, fmt.Errorf("recreate %s: %w (last error: %v)", st.key, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := k.syncLocked(pod.DeepCopy(), st); err != nil {
		k.queue.AddRateLimited(st.key) // the sync loop retries what failed
	}
	return st.sb.info, nil
}

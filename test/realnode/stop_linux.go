package realnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// firstPod runs a pause pod on the node until it is Running, then deletes it: the node runs pods,
// and the CNI bridge exists from then on (a snapshot of the host's rules taken now is final).
func (n *Node) firstPod(ctx context.Context) error {
	pods := n.Cluster.Client.CoreV1().Pods(metav1.NamespaceDefault)
	pod, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "real-node-first-pod-"},
		Spec: corev1.PodSpec{
			NodeName:                      n.Name,
			TerminationGracePeriodSeconds: ptr(int64(0)),
			AutomountServiceAccountToken:  ptr(false),
			Containers: []corev1.Container{{
				Name: "pause", Image: PauseImage, ImagePullPolicy: corev1.PullNever,
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("first pod: %w", err)
	}
	t0 := time.Now()
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, nil
	})
	if err != nil {
		return fmt.Errorf("first pod %s not Running: %w%s", pod.Name, err, n.LogTail(30))
	}
	n.say("first pod Running after %s", time.Since(t0).Round(time.Millisecond))
	return pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
}

// Stop stops the node and its control plane and removes only what Start made: the kubelet stops,
// every sandbox is removed through the CRI (the CNI plugin deletes namespaces and veths), containerd
// and its shims stop, then the cgroup root, the kubelet's mounts and the bridge go, the control
// plane stops, the host's sysctls are restored and the lock is released. It is safe to call more
// than once; the first call's error is returned each time.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() { n.stopErr = n.stop() })
	return n.stopErr
}

func (n *Node) stop() error {
	t0 := time.Now()
	var errs []error
	if n.kubelet != nil {
		n.kubelet.Stop(10 * time.Second)
	}
	if n.containerd != nil && !n.containerd.Exited() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if out, err := n.Crictl(ctx, "rmp", "--force", "--all"); err != nil {
			errs = append(errs, fmt.Errorf("remove the sandboxes: %w: %s", err, out))
		}
		cancel()
		n.containerd.Stop(10 * time.Second)
	}
	if n.ContainerdSocket != "" {
		for _, pid := range shimPIDs(n.ContainerdSocket) {
			if err := killPID(pid); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if n.d.root != "" {
		errs = append(errs, removeCgroupRoot(), unmountUnder(n.d.kubeletRoot()), unmountUnder(n.d.containerdDir("state")),
			unmountUnder(n.d.containerdDir("root")), deleteBridge())
	}
	if n.Cluster != nil {
		errs = append(errs, n.Cluster.Stop())
	}
	if n.sysctls != nil {
		errs = append(errs, restoreSysctls(n.sysctls))
	}
	if n.ownDir && n.Dir != "" {
		if err := os.RemoveAll(n.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove the state directory: %w", err))
		}
	}
	if n.lock != nil {
		n.lock.Close()
	}
	n.say("stopped in %s", time.Since(t0).Round(time.Millisecond))
	return errors.Join(errs...)
}

// killPID kills a process and waits (up to 5 s) until it is gone.
func killPID(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return nil // gone already
	}
	for range 50 {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if len(b) == 0 || containsZombie(string(b)) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("process %d still running after SIGKILL", pid)
}

func containsZombie(stat string) bool {
	for i := len(stat) - 1; i > 0; i-- {
		if stat[i] == ')' {
			return len(stat) > i+2 && stat[i+2] == 'Z'
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }

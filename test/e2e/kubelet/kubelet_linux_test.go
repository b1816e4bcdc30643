package kubelet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/redhat-cop/istio-pod-network-controller/initwait/waittest"
	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/kubelet"
)

// Addresses of this package's simulated node: distinct from the e2e package's, which may run at
// the same time.
const (
	bridge = "pnc-brk0"
	cidr4  = "10.245.0.1/16"
	cidr6  = "fd00:245::1/64"
)

// TestSimulatedKubelet drives the simulator through a pod's life with the real wait binary, in
// place of the controller programming the namespace with the real rule engine: sandbox (registered
// namespace, dual-stack addresses, pause and wait processes in the pod's cgroup, the wait process
// as the proxy UID), downward-API file, release, sandbox re-creation with a stale annotation,
// failure with a termination message, deletion and Stop's clean-up.
func TestSimulatedKubelet(t *testing.T) {
	testutil.RequireRoot(t)
	c := cluster.StartForTest(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := t.TempDir()
	if err := harness.GoBuild(ctx, bin, "./cmd/istio-pod-network-wait"); err != nil {
		t.Fatal(err)
	}
	state, netnsDir := t.TempDir(), t.TempDir()
	applier, err := netsetup.NewApplier(ctx, netsetup.Options{LockDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var exits []string
	k, err := kubelet.Start(ctx, kubelet.Options{
		Client: c.Client, WaitBinary: filepath.Join(bin, "istio-pod-network-wait"), StateDir: state, NetnsDir: netnsDir,
		Bridge: bridge, PodCIDRv4: cidr4, PodCIDRv6: cidr6, Log: testLog{t},
		OnWaitExit: func(ctx context.Context, e kubelet.WaitExit) {
			// The rules must verify at the moment the wait container exits 0.
			res := fmt.Sprintf("exit %d", e.ExitCode)
			if e.ExitCode == 0 {
				cfg, err := podconfig.FromPod(e.Pod)
				if err == nil {
					_, err = applier.Verify(ctx, e.Netns, string(e.Pod.UID), cfg)
				}
				res += fmt.Sprintf(" verify=%v", err)
			}
			mu.Lock()
			exits = append(exits, res)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = k.Stop()
		}
	})
	if _, err := c.EnsureNamespace(ctx, "sim", nil); err != nil {
		t.Fatal(err)
	}
	pods := c.Client.CoreV1().Pods("sim")
	pod, err := pods.Create(ctx, harness.MeshPod("sim", "p1", c.NodeName, harness.DualStack()), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The sandbox and the status with the IPs and the wait container running.
	pod = waitPod(t, c, pod, "IPs and the wait container running", func(p *corev1.Pod) bool {
		return len(p.Status.PodIPs) == 2 && p.Status.Phase == corev1.PodPending &&
			len(p.Status.InitContainerStatuses) == 1 && p.Status.InitContainerStatuses[0].State.Running != nil
	})
	sb, ok := k.Sandbox(pod.UID)
	if !ok {
		t.Fatal("no sandbox")
	}
	wantIPs := []string{pod.Status.PodIPs[0].IP, pod.Status.PodIPs[1].IP}
	if !netip.MustParsePrefix(cidr4).Masked().Contains(sb.IPs[0]) || !netip.MustParsePrefix(cidr6).Masked().Contains(sb.IPs[1]) ||
		sb.IPs[0].String() != wantIPs[0] || sb.IPs[1].String() != wantIPs[1] {
		t.Fatalf("sandbox IPs %v, status IPs %v", sb.IPs, wantIPs)
	}
	if want := filepath.Join(netnsDir, "cni-"+sb.ID); sb.NetnsPath != want {
		t.Errorf("namespace registered at %q, want %q", sb.NetnsPath, want)
	}
	h, err := k.OpenNetns(pod.UID)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range sb.IPs {
		if !slices.Contains(addrs, ip) {
			t.Errorf("the namespace holds %v, not %v", addrs, ip)
		}
	}
	id, _ := h.ID()
	if id.String() != sb.NetnsID {
		t.Errorf("namespace identity %s, sandbox says %s", id, sb.NetnsID)
	}
	// Both processes run in the pod's cgroup and namespace; the wait process as the proxy UID.
	procs := cgroupProcs(t, pod)
	if len(procs) != 2 {
		t.Fatalf("pod cgroup holds processes %v, want pause and wait", procs)
	}
	for _, pid := range procs {
		if ino := netnsInode(t, pid); ino != sb.Inode {
			t.Errorf("process %d is in namespace inode %d, want %d", pid, ino, sb.Inode)
		}
		if pid != sb.PausePID {
			if uid := procUID(t, pid); uid != "1337" {
				t.Errorf("wait process %d runs as UID %s, want 1337", pid, uid)
			}
		}
	}
	// The downward-API file, in the kubelet's format.
	annFile := filepath.Join(state, "pods", fmt.Sprintf("sim_p1_%s", pod.UID), "rootfs", harness.WaitMountPath, "annotations")
	if got, _ := os.ReadFile(annFile); string(got) != string(waittest.Format(pod.Annotations)) {
		t.Errorf("annotations file:\n%s\nwant:\n%s", got, waittest.Format(pod.Annotations))
	}

	// Program the namespace and annotate the pod as the controller would: the pod is released.
	program(t, ctx, c, applier, h, pod)
	pod = waitPod(t, c, pod, "released", func(p *corev1.Pod) bool {
		s := p.Status.InitContainerStatuses
		return p.Status.Phase == corev1.PodRunning && s[0].State.Terminated != nil && s[0].State.Terminated.ExitCode == 0
	})
	// The kubelet records the release once its status patch returns, which a watcher may see first.
	tl, _ := k.Timeline(pod.UID)
	testutil.Eventually(t, 10*time.Second, "the kubelet to record the release", func() bool {
		tl, _ = k.Timeline(pod.UID)
		return !tl.Released.IsZero()
	})
	if tl.Annotated.IsZero() || tl.Released.Before(tl.WaitExited) || tl.WaitExited.Before(tl.Annotated) {
		t.Errorf("timeline out of order: %+v", tl)
	}
	h.Close()

	// A new sandbox: new namespace, same IPs, the wait container running again and refusing the
	// stale annotation, released once the new namespace is programmed.
	sb2, err := k.Recreate(ctx, pod.UID, false)
	if err != nil {
		t.Fatal(err)
	}
	if sb2.NetnsID == sb.NetnsID || sb2.Generation != 2 || !slices.Equal(sb2.IPs, sb.IPs) {
		t.Fatalf("re-created sandbox %+v, first %+v", sb2, sb)
	}
	pod = waitPod(t, c, pod, "wait container running again", func(p *corev1.Pod) bool {
		s := p.Status.InitContainerStatuses
		return p.Status.Phase == corev1.PodPending && s[0].State.Running != nil && s[0].RestartCount == 1
	})
	testutil.Eventually(t, time.Minute, "the wait container to call the annotation stale", func() bool {
		return strings.Contains(k.WaitLogs(pod.UID), "stale")
	})
	h2, err := k.OpenNetns(pod.UID)
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	program(t, ctx, c, applier, h2, pod)
	pod = waitPod(t, c, pod, "released again", func(p *corev1.Pod) bool {
		s := p.Status.InitContainerStatuses
		return p.Status.Phase == corev1.PodRunning && s[0].State.Terminated != nil && s[0].RestartCount == 1
	})

	// status=failed: the wait container exits 4 with the reason as its termination message.
	bad, err := pods.Create(ctx, harness.MeshPod("sim", "p2", c.NodeName), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitPod(t, c, bad, "IP", func(p *corev1.Pod) bool { return p.Status.PodIP != "" })
	patchAnnotations(t, ctx, c, bad, map[string]string{contract.KeyStatus: "failed", contract.KeyReason: "annotation x: \"bad\""})
	bad = waitPod(t, c, bad, "the wait container failed", func(p *corev1.Pod) bool {
		return p.Status.InitContainerStatuses[0].State.Terminated != nil
	})
	if term := bad.Status.InitContainerStatuses[0].State.Terminated; term.ExitCode != 4 || !strings.Contains(term.Message, `annotation x: "bad"`) {
		t.Errorf("terminated state %+v: want exit 4 and the reason", term)
	}
	mu.Lock()
	if want := []string{"exit 0 verify=<nil>", "exit 0 verify=<nil>", "exit 4"}; !slices.Equal(exits, want) {
		t.Errorf("wait exits %q, want %q", exits, want)
	}
	mu.Unlock()

	// Deletion: the simulator removes the sandbox and confirms the deletion.
	if err := pods.Delete(ctx, "p1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Minute, "p1 to be deleted", func() bool {
		_, err := pods.Get(ctx, "p1", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	testutil.Eventually(t, time.Minute, "p1's sandbox to go", func() bool {
		_, err := os.Stat(sb2.NetnsPath)
		_, ok := k.Sandbox(pod.UID)
		return os.IsNotExist(err) && !ok
	})
	if _, err := os.Stat(podCgroup(pod)); !os.IsNotExist(err) {
		t.Errorf("p1's cgroup %s is still there (%v)", podCgroup(pod), err)
	}

	// Stop removes everything.
	badSB, _ := k.Sandbox(bad.UID)
	stopped = true
	if err := k.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(bridge); err == nil {
		t.Error("the bridge is still there after Stop")
	}
	if _, err := netlink.LinkByName(badSB.HostVeth); err == nil {
		t.Errorf("veth %s is still there after Stop", badSB.HostVeth)
	}
	if _, err := os.Stat(badSB.NetnsPath); !os.IsNotExist(err) {
		t.Errorf("namespace %s is still registered after Stop", badSB.NetnsPath)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", badSB.PausePID)); !os.IsNotExist(err) {
		t.Errorf("pause process %d still runs after Stop", badSB.PausePID)
	}
	if _, err := os.Stat(podCgroup(bad)); !os.IsNotExist(err) {
		t.Errorf("cgroup %s is still there after Stop", podCgroup(bad))
	}
}

// program applies the pod's rules in h and annotates the pod ready for it, through pods/status.
func program(t *testing.T, ctx context.Context, c *cluster.Cluster, a *netsetup.Applier, h interface {
	netsetup.Namespace
	ID() (contract.NetnsID, error)
}, pod *corev1.Pod) {
	t.Helper()
	cfg, err := podconfig.FromPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Apply(ctx, h, string(pod.UID), cfg)
	if err != nil {
		t.Fatal(err)
	}
	id, err := h.ID()
	if err != nil {
		t.Fatal(err)
	}
	patchAnnotations(t, ctx, c, pod, map[string]string{contract.KeyStatus: "ready", contract.KeyNetns: id.String(),
		contract.KeyRules: res.Hash, contract.KeyFamilies: res.Families})
}

func patchAnnotations(t *testing.T, ctx context.Context, c *cluster.Cluster, pod *corev1.Pod, ann map[string]string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if _, err := c.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, body, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
}

// waitPod polls the pod until cond holds (a minute at most).
func waitPod(t *testing.T, c *cluster.Cluster, pod *corev1.Pod, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	testutil.Eventually(t, time.Minute, pod.Name+": "+what, func() bool {
		p, err := c.Client.CoreV1().Pods(pod.Namespace).Get(context.Background(), pod.Name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		last = p
		return cond(p)
	})
	return last
}

func podCgroup(pod *corev1.Pod) string {
	return filepath.Join(kubelet.DefaultCgroupRoot, "pids", "kubepods", "besteffort", "pod"+string(pod.UID))
}

// cgroupProcs lists the processes in the pod's cgroup (in its containers' cgroups).
func cgroupProcs(t *testing.T, pod *corev1.Pod) []int {
	t.Helper()
	var pids []int
	entries, err := os.ReadDir(podCgroup(pod))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		data, _ := os.ReadFile(filepath.Join(podCgroup(pod), e.Name(), "cgroup.procs"))
		for f := range strings.FieldsSeq(string(data)) {
			var pid int
			fmt.Sscan(f, &pid)
			pids = append(pids, pid)
		}
	}
	return pids
}

func netnsInode(t *testing.T, pid int) uint64 {
	t.Helper()
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatal(err)
	}
	var ino uint64
	fmt.Sscanf(link, "net:[%d]", &ino)
	return ino
}

func procUID(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			return strings.Fields(rest)[0]
		}
	}
	return ""
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

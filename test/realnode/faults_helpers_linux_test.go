package realnode

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// gateAndBuild gates the test or benchmark (E2E or CI set, root) and builds the project's images
// into a temporary directory, which it returns with the archives.
func gateAndBuild(tb testing.TB) (work string, archives []string) {
	tb.Helper()
	cluster.Require(tb)
	testutil.RequireRoot(tb)
	work = tb.TempDir()
	archives, err := BuildProjectImages(tb.Context(), work, testLog{tb})
	if err != nil {
		tb.Fatalf("build the images: %v", err)
	}
	return work, archives
}

// checksPerPod is how many containers of an injected pod come after its wait container: the app's
// init container (migrate), the app and istio-proxy. The release check inspects each.
const checksPerPod = 3

// releaseGuard reads the release check's records scenario by scenario.
type releaseGuard struct {
	n    *Node
	mark int // records before it belong to earlier scenarios
}

// since returns the records written after the mark and moves the mark past them.
func (g *releaseGuard) since(t *testing.T) []ReleaseCheck {
	t.Helper()
	all, err := g.n.ReleaseChecks()
	if err != nil {
		t.Fatal(err)
	}
	out := all[g.mark:]
	g.mark = len(all)
	return out
}

// requireClean asserts that, since the last call, the release check inspected at least want
// containers of pods in namespace ns (keep(uid) filters them; nil keeps all), that none of its
// records anywhere is a violation, and returns the inspected records of ns.
func (g *releaseGuard) requireClean(t *testing.T, scenario, ns string, want int, keep func(types.UID) bool) []ReleaseCheck {
	t.Helper()
	var checked []ReleaseCheck
	for _, r := range g.since(t) {
		if r.Violation {
			t.Errorf("%s: release check violation: %s", scenario, r)
		}
		if r.Kind == "check" && strings.HasPrefix(r.Pod, ns+"/") && (keep == nil || keep(types.UID(r.UID))) {
			checked = append(checked, r)
		}
	}
	if len(checked) < want {
		t.Errorf("%s: the release check inspected %d containers in %s, want at least %d", scenario, len(checked), ns, want)
	}
	t.Logf("figure: %s: the release check inspected %d containers, %s", scenario, len(checked), checkTimes(checked))
	return checked
}

// checkTimes summarizes how long the release check took per container (under the runtime's lock).
func checkTimes(rs []ReleaseCheck) string {
	var longest time.Duration
	for _, r := range rs {
		if d, err := time.ParseDuration(r.Took); err == nil && d > longest {
			longest = d
		}
	}
	return "longest check " + longest.Round(time.Millisecond).String()
}

// controllerSampler counts, every 20 ms, the containers in the node's cgroup root that run the
// controller (`istio-pod-network-controller run`), and remembers the most seen at once. It counts
// containers (cgroups), not processes: a child the controller forks (iptables-restore, nsenter)
// carries the parent's command line until it execs.
type controllerSampler struct {
	max  atomic.Int32
	stop chan struct{}
	done sync.WaitGroup
}

func sampleControllers() *controllerSampler {
	s := &controllerSampler{stop: make(chan struct{})}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		for {
			if c := int32(len(controllerContainers())); c > s.max.Load() {
				s.max.Store(c)
			}
			select {
			case <-s.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the most controller containers seen at once.
func (s *controllerSampler) Stop() int {
	close(s.stop)
	s.done.Wait()
	return int(s.max.Load())
}

// controllerContainers returns the cgroups (one per container) of the node's processes that run
// the controller.
func controllerContainers() map[string]bool {
	out := map[string]bool{}
	for _, pid := range cgroupPIDs() {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		argv := bytes.Split(cmdline, []byte{0})
		if len(argv) < 2 || filepath.Base(string(argv[0])) != "istio-pod-network-controller" || string(argv[1]) != "run" {
			continue
		}
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(cg)) {
			if strings.Contains(line, CgroupRoot) {
				_, path, _ := strings.Cut(strings.TrimSpace(line), ":")
				_, path, _ = strings.Cut(path, ":")
				out[path] = true
				break
			}
		}
	}
	return out
}

// sandboxPID returns the PID of the pod's sandbox (pause) process, through the CRI.
func (n *Node) sandboxPID(t *testing.T, uid types.UID) int {
	t.Helper()
	ctx := t.Context()
	ids, err := n.Crictl(ctx, "pods", "--state", "ready", "--label", "io.kubernetes.pod.uid="+string(uid), "-q")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(ids))
	if len(fields) != 1 {
		t.Fatalf("pod %s: want one ready sandbox, crictl lists %q", uid, ids)
	}
	out, err := n.Crictl(ctx, "inspectp", "-o", "go-template", "--template", "{{.info.pid}}", fields[0])
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || pid <= 1 {
		t.Fatalf("sandbox %s: pid %q", fields[0], out)
	}
	return pid
}

// killPause kills the pod's pause process: the kubelet makes a new sandbox.
func (n *Node) killPause(t *testing.T, uid types.UID) {
	t.Helper()
	pid := n.sandboxPID(t, uid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the pause process %d: %v", pid, err)
	}
	t.Logf("killed pod %s's pause process %d", uid, pid)
}

// nftHandles is `nft -a list ruleset` in the namespace: rules with their kernel handles, which
// change when anything re-programs the namespace (even with the same rules).
func nftHandles(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+path, "nft", "-a", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft -a list ruleset in %s: %v: %s", path, err, out)
	}
	return counters.ReplaceAllString(string(out), "[-]")
}

// podState is what "not disturbed" compares: the sandbox's namespace, its identity and rules
// with their handles, the pod's annotations and the containers' restart counts.
type podState struct {
	netns, handles, annotation string
	restarts                   map[string]int32
}

func (n *Node) podStates(t *testing.T, pods []corev1.Pod) map[types.UID]podState {
	t.Helper()
	out := map[types.UID]podState{}
	for _, p := range pods {
		path, err := PodNetns(string(p.UID))
		if err != nil {
			t.Fatal(err)
		}
		st := podState{netns: path, handles: nftHandles(t, path), annotation: p.Annotations[contract.KeyNetns], restarts: map[string]int32{}}
		for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			st.restarts[s.Name] = s.RestartCount
		}
		out[p.UID] = st
	}
	return out
}

// compareStates fails for each pod whose state changed, or that is gone.
func compareStates(t *testing.T, what string, before, after map[types.UID]podState) {
	t.Helper()
	for uid, b := range before {
		a, ok := after[uid]
		switch {
		case !ok:
			t.Errorf("%s: pod %s is gone", what, uid)
		case a.netns != b.netns || a.annotation != b.annotation:
			t.Errorf("%s: pod %s: namespace %s (%s) became %s (%s)", what, uid, b.netns, b.annotation, a.netns, a.annotation)
		case a.handles != b.handles:
			t.Errorf("%s: pod %s: its namespace was re-programmed:\n--- before\n%s\n--- after\n%s", what, uid, b.handles, a.handles)
		case fmt.Sprint(a.restarts) != fmt.Sprint(b.restarts):
			t.Errorf("%s: pod %s: restart counts %v became %v", what, uid, b.restarts, a.restarts)
		}
	}
}

// waitLog returns the log of the pod's wait container (its current run).
func (n *Node) waitLog(t *testing.T, ns, pod string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b, err := n.Cluster.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: harness.WaitContainer}).DoRaw(ctx)
	if err != nil {
		t.Fatalf("logs of %s/%s's %s: %v", ns, pod, harness.WaitContainer, err)
	}
	return string(b)
}

// scale sets the Deployment's replicas through the scale subresource (kubectl scale).
func (n *Node) scale(t *testing.T, name string, replicas int32) {
	t.Helper()
	ctx := t.Context()
	deps := n.Cluster.Client.AppsV1().Deployments(meshNS)
	s, err := deps.GetScale(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Replicas = replicas
	if _, err := deps.UpdateScale(ctx, name, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// uids returns the set of the pods' UIDs.
func uids(pods []corev1.Pod) map[types.UID]bool {
	out := map[types.UID]bool{}
	for _, p := range pods {
		out[p.UID] = true
	}
	return out
}

// controllerPod returns the node's controller pod (the DaemonSet's only one), waiting until it is Ready.
func (n *Node) controllerPod(t *testing.T) corev1.Pod {
	t.Helper()
	return n.waitPods(t, controllerNS, "the controller pod Ready", func(ps []corev1.Pod) bool {
		return len(ps) == 1 && podReady(&ps[0])
	})[0]
}

// hostRulesUnchanged compares the host's rules with the snapshot taken before the controller ran.
func hostRulesUnchanged(t *testing.T, scenario, before string) {
	t.Helper()
	after, err := HostRules(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("%s: the host's rules changed:\n--- before (kubelet and CNI up, controller not installed)\n%s\n--- after\n%s", scenario, before, after)
	}
}

// smallProxy sets istio-proxy's CPU request to 10m, as `sidecar.istio.io/proxyCPU: 10m` would:
// the injector's 100m would fit only about 18 pods on this 2-core node.
func smallProxy(spec *corev1.PodSpec) {
	for i := range spec.Containers {
		if c := &spec.Containers[i]; c.Name == "istio-proxy" {
			c.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("10m")
		}
	}
}

// releasedSince reports whether the pod's wait container exited 0 in a run that started at t0 or
// later (the API's times have one-second precision).
func releasedSince(p *corev1.Pod, t0 time.Time) bool {
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name == harness.WaitContainer {
			t := s.State.Terminated
			return t != nil && t.ExitCode == 0 && !t.StartedAt.Time.Before(t0.Truncate(time.Second))
		}
	}
	return false
}

func countReleased(ps []corev1.Pod) int {
	c := 0
	for i := range ps {
		if released(&ps[i]) {
			c++
		}
	}
	return c
}

// execIn runs a command in the network namespace at path.
func execIn(path string, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=" + path}, args...)...).CombinedOutput()
	return string(out), err
}

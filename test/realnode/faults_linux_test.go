package realnode

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// nodeMonitorGracePeriod is kube-controller-manager's default --node-monitor-grace-period: a node
// silent for longer is marked NotReady (and its pods evicted later).
const nodeMonitorGracePeriod = 50 * time.Second

// faultSuite is one real node shared by the fault scenarios, which run in order on it.
type faultSuite struct {
	n         *Node
	guard     *releaseGuard
	hostRules string
}

// TestFaultsOnTheRealNode runs the fault, restart, upgrade and uninstall scenarios on one real
// node with the synchronous release check (test/realnode/nricheck) in containerd: every container
// after a pod's wait container is inspected right before it starts, and each scenario asserts no
// violation and a minimum number of inspected containers. The host's rules, snapshotted once the
// kubelet and the CNI bridge are up and before the controller is installed, are compared after
// each scenario. A scenario that fails does not stop the later ones.
func TestFaultsOnTheRealNode(t *testing.T) {
	work, archives := gateAndBuild(t)
	ctx := t.Context()
	check, err := BuildReleaseCheck(ctx, work)
	if err != nil {
		t.Fatal(err)
	}
	s := &faultSuite{n: StartForTest(t, Options{Images: archives, ReleaseCheck: check})}
	s.guard = &releaseGuard{n: s.n}
	if s.hostRules, err = HostRules(ctx); err != nil {
		t.Fatal(err)
	}
	for _, sc := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"ReleaseCheckCatchesAnEarlyStart", s.negativeControl},
		{"ControllerDeletedDuringScaleUp", s.controllerDeleted},
		{"SandboxRecreated", s.sandboxRecreated},
		{"DriftRepaired", s.drift},
		{"APIServerRestartedDuringScaleUp", s.apiServerRestarted},
		{"RuntimeRestart", s.restart},
		{"Reboot", s.reboot},
		{"HelmUpgradeDuringScaleUp", s.upgrade},
		{"HelmUninstall", s.uninstall},
	} {
		t.Run(sc.name, func(t *testing.T) {
			sc.run(t)
			hostRulesUnchanged(t, sc.name, s.hostRules)
		})
	}
}

// negativeControl: with no controller installed yet, a pod whose "wait" container is a no-op that
// exits at once starts its app: the release check must record that start as a violation.
func (s *faultSuite) negativeControl(t *testing.T) {
	ctx := t.Context()
	const ns = "release-check-control"
	if _, err := s.n.Cluster.EnsureNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	standin := func(name, arg string) corev1.Container {
		return corev1.Container{Name: name, Image: StandinImage, ImagePullPolicy: corev1.PullNever, Command: []string{"/standin"}, Args: []string{arg}}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "early-start", Namespace: ns},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr(int64(0)),
			AutomountServiceAccountToken:  ptr(false),
			InitContainers:                []corev1.Container{standin(harness.WaitContainer, "init")},
			Containers:                    []corev1.Container{standin("app", "app")},
		},
	}
	if _, err := s.n.Cluster.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.n.waitPods(t, ns, "the early-start pod Running", func(ps []corev1.Pod) bool {
		return len(ps) == 1 && ps[0].Status.Phase == corev1.PodRunning
	})
	var caught bool
	for _, r := range s.guard.since(t) {
		if r.Kind == "check" && r.Pod == ns+"/early-start" && r.Container == "app" && r.Violation && r.Verdict == "NOT PROGRAMMED" {
			caught = true
			t.Logf("the release check caught it: %s", r)
		} else if r.Violation {
			t.Errorf("unexpected violation: %s", r)
		}
	}
	if !caught {
		t.Errorf("the release check recorded no violation for the app of a pod released by a no-op wait container")
	}
	if err := s.n.Cluster.Client.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// controllerDeleted: the chart installed, a Deployment scaled to 30 at once, the controller pod
// deleted once some (not all) pods are released: the DaemonSet re-creates it, every pod ends
// released, none before its namespace held its verified rules.
func (s *faultSuite) controllerDeleted(t *testing.T) {
	ctx := t.Context()
	n := s.n
	if out, err := n.HelmInstall(ctx, "", release, controllerNS, "controller.driftPeriod=5s"); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("helm install:\n%s", out)
	}
	first := n.controllerPod(t)
	n.meshNamespace(t)
	s.guard.since(t)
	sampler := sampleControllers()
	t0 := time.Now()
	n.createMeshDeployment(t, 30, smallProxy)
	partly := n.waitPods(t, meshNS, "some pods released", func(ps []corev1.Pod) bool { return countReleased(ps) >= 3 })
	if err := n.Cluster.Client.CoreV1().Pods(controllerNS).Delete(ctx, first.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("deleted the controller pod %s with %d of 30 pods released, %s after the scale-up", first.Name, countReleased(partly), time.Since(t0).Round(time.Millisecond))
	second := n.controllerPod(t)
	if second.UID == first.UID {
		t.Fatalf("the controller pod %s was not re-created", first.Name)
	}
	n.waitReleased(t, 30, nil)
	t.Logf("figure: 30 pods at once with the controller pod deleted: all released %s after the scale-up; at most %d controller processes at once",
		time.Since(t0).Round(time.Millisecond), sampler.Stop())
	s.guard.requireClean(t, "controller deleted during a 30-pod scale-up", meshNS, 30*checksPerPod, nil)
	n.scale(t, deployment, 6)
	n.waitReleased(t, 6, nil)
	s.guard.since(t)
}

// sandboxRecreated: a pod's pause process killed: the kubelet makes a new sandbox (a new
// namespace); the pod is released again only for the new namespace, programmed first.
func (s *faultSuite) sandboxRecreated(t *testing.T) {
	n := s.n
	pod := n.listPods(t, meshNS)[0]
	oldID := pod.Annotations[contract.KeyNetns]
	n.killPause(t, pod.UID)
	t0 := time.Now()
	var again corev1.Pod
	n.waitPods(t, meshNS, "the pod released for a new namespace", func(ps []corev1.Pod) bool {
		for _, p := range ps {
			if p.UID == pod.UID && p.Annotations[contract.KeyNetns] != oldID && releasedSince(&p, t0) && podReady(&p) {
				again = p
				return true
			}
		}
		return false
	})
	t.Logf("figure: pause killed → pod released again and Ready for namespace %s (was %s) in %s", again.Annotations[contract.KeyNetns], oldID, time.Since(t0).Round(time.Millisecond))
	recs := s.guard.requireClean(t, "sandbox re-created", meshNS, checksPerPod, func(uid types.UID) bool { return uid == pod.UID })
	for _, r := range recs {
		if r.NetnsID != again.Annotations[contract.KeyNetns] {
			t.Errorf("container %s started in namespace %s, the pod is released for %s", r.Container, r.NetnsID, again.Annotations[contract.KeyNetns])
		}
	}
}

// drift: a rule deleted in a released pod's namespace; the controller's drift check (every 5 s
// here) restores exactly the rules there were, without disturbing the pod.
func (s *faultSuite) drift(t *testing.T) {
	n := s.n
	pod := n.listPods(t, meshNS)[1]
	path, err := PodNetns(string(pod.UID))
	if err != nil {
		t.Fatal(err)
	}
	want := saveIn(t, path)
	if out, err := execIn(path, "iptables-nft", "-t", "nat", "-D", "ISTIO_OUTPUT", "1"); err != nil {
		t.Fatalf("delete a rule in %s: %v: %s", path, err, out)
	}
	if saveIn(t, path) == want {
		t.Fatal("the rule deletion changed nothing")
	}
	t0 := time.Now()
	deadline := time.Now().Add(2 * time.Minute)
	for saveIn(t, path) != want {
		if time.Now().After(deadline) {
			t.Fatalf("the deleted rule was not restored in 2 min:\n--- want\n%s\n--- live\n%s", want, saveIn(t, path))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("figure: deleted rule restored %s after the deletion (drift period 5 s)", time.Since(t0).Round(time.Millisecond))
	s.guard.requireClean(t, "drift", meshNS, 0, nil)
}

// apiServerRestarted: the API server stopped and started again while a scale-up (6 → 12) runs.
func (s *faultSuite) apiServerRestarted(t *testing.T) {
	n := s.n
	old := uids(n.listPods(t, meshNS))
	n.scale(t, deployment, 12)
	n.waitPods(t, meshNS, "new pods created", func(ps []corev1.Pod) bool { return len(ps) >= 8 })
	t0 := time.Now()
	if err := n.Cluster.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := n.Cluster.StartAPIServer(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server down and up again in %s", time.Since(t0).Round(time.Millisecond))
	n.waitReleased(t, 12, nil)
	s.guard.requireClean(t, "API server restarted during a scale-up", meshNS, 6*checksPerPod, func(uid types.UID) bool { return !old[uid] })
}

// restart: the kubelet and containerd stopped and started: the sandboxes survive, nothing is
// re-programmed (each namespace's nft rule handles unchanged) and no pod is disturbed (same
// namespaces, restart counts, no container started).
func (s *faultSuite) restart(t *testing.T) {
	n := s.n
	pods := n.listPods(t, meshNS)
	before := n.podStates(t, pods)
	down, err := n.RestartRuntime(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("figure: restart downtime (kubelet stop → its /healthz again) %s", down.Round(time.Millisecond))
	n.waitReleased(t, len(pods), nil)
	time.Sleep(12 * time.Second) // two drift periods and the kubelet's first pod syncs
	after := n.podStates(t, n.listPods(t, meshNS))
	compareStates(t, "restart", before, after)
	for _, r := range s.guard.since(t) {
		if r.Kind == "check" {
			t.Errorf("restart: a container started: %s", r)
		}
	}
}

// reboot: the emulated reboot: every sandbox new; each pod's wait container finds the stale ready
// (old namespace identity) and waits; every pod programmed before release; downtime under the
// node-monitor grace period.
func (s *faultSuite) reboot(t *testing.T) {
	n := s.n
	pods := n.listPods(t, meshNS)
	before := map[types.UID]string{}
	for _, p := range pods {
		before[p.UID] = p.Annotations[contract.KeyNetns]
	}
	t0 := time.Now()
	down, err := n.Reboot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if down >= nodeMonitorGracePeriod {
		t.Errorf("reboot downtime %s, not under the node-monitor grace period %s", down, nodeMonitorGracePeriod)
	}
	after := n.waitPods(t, meshNS, "every pod released for a new namespace", func(ps []corev1.Pod) bool {
		if len(ps) != len(pods) {
			return false
		}
		for _, p := range ps {
			old, ok := before[p.UID]
			if !ok || p.Annotations[contract.KeyNetns] == old || !releasedSince(&p, t0) || !podReady(&p) {
				return false
			}
		}
		return true
	})
	t.Logf("figure: reboot downtime %s; all %d pods released again for new namespaces %s after the reboot began", down.Round(time.Millisecond), len(pods), time.Since(t0).Round(time.Millisecond))
	stale := 0
	for _, p := range after {
		if log := n.waitLog(t, meshNS, p.Name); strings.Contains(log, "is stale") {
			stale++
		}
	}
	t.Logf("figure: %d of %d wait containers logged the stale ready and waited", stale, len(after))
	if stale == 0 {
		t.Errorf("no wait container saw the stale ready after the reboot (each pod's annotation named the old namespace)")
	}
	s.guard.requireClean(t, "reboot", meshNS, len(pods)*checksPerPod, nil)
}

// upgrade: `helm upgrade` to a new controller image tag while a scale-up (12 → 18) runs: the
// DaemonSet rolls, never two controller processes on the node at once, no pod released early.
func (s *faultSuite) upgrade(t *testing.T) {
	ctx := t.Context()
	n := s.n
	const tag = "e2e-upgrade"
	newImage := strings.TrimSuffix(ControllerImage, ":"+ImageVersion) + ":" + tag
	if _, err := n.Ctr(ctx, "images", "tag", ControllerImage, newImage); err != nil {
		t.Fatal(err)
	}
	first := n.controllerPod(t)
	old := uids(n.listPods(t, meshNS))
	sampler := sampleControllers()
	n.scale(t, deployment, 18)
	chart, err := ChartDir(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := n.Helm(ctx, "upgrade", release, chart, "--namespace", controllerNS, "--reuse-values", "--set", "image.tag="+tag); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("helm upgrade:\n%s", out)
	}
	second := n.waitPods(t, controllerNS, "the upgraded controller pod Ready", func(ps []corev1.Pod) bool {
		return len(ps) == 1 && ps[0].UID != first.UID && ps[0].Spec.Containers[0].Image == newImage && podReady(&ps[0])
	})[0]
	n.waitReleased(t, 18, nil)
	if most := sampler.Stop(); most != 1 {
		t.Errorf("helm upgrade: at most %d controller processes ran on the node at once, want 1", most)
	}
	t.Logf("the DaemonSet rolled %s → %s (%s)", first.Name, second.Name, newImage)
	s.guard.requireClean(t, "helm upgrade during a scale-up", meshNS, 6*checksPerPod, func(uid types.UID) bool { return !old[uid] })
}

// uninstall: `helm uninstall`: the released pods keep running undisturbed; a new pod waits, and
// its wait container's log says it waits for the node controller.
func (s *faultSuite) uninstall(t *testing.T) {
	ctx := t.Context()
	n := s.n
	pods := n.listPods(t, meshNS)
	before := n.podStates(t, pods)
	if out, err := n.Helm(ctx, "uninstall", release, "--namespace", controllerNS); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("helm uninstall:\n%s", out)
	}
	n.waitPods(t, controllerNS, "the controller pod gone", func(ps []corev1.Pod) bool { return len(ps) == 0 })
	// The new pod is one created after the controller was gone: a pod the ReplicaSet was still
	// creating (after the step before) may have been programmed by the controller before it went.
	existing := map[types.UID]bool{}
	for _, p := range n.listPods(t, meshNS) {
		existing[p.UID] = true
	}
	n.scale(t, deployment, int32(len(pods)+1))
	var waiting corev1.Pod
	n.waitPods(t, meshNS, "a new pod's wait container running", func(ps []corev1.Pod) bool {
		for _, p := range ps {
			for _, st := range p.Status.InitContainerStatuses {
				if !existing[p.UID] && st.Name == harness.WaitContainer && st.State.Running != nil {
					waiting = p
					return true
				}
			}
		}
		return false
	})
	time.Sleep(5 * time.Second)
	log := n.waitLog(t, meshNS, waiting.Name)
	if !strings.Contains(log, "waiting for the controller to program this pod's network namespace") {
		t.Errorf("the waiting pod's wait container log does not say it waits for the node controller:\n%s", log)
	}
	t.Logf("the new pod's wait container log:\n%s", log)
	got, err := n.Cluster.Client.CoreV1().Pods(meshNS).Get(ctx, waiting.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if released(got) || got.Status.Phase != corev1.PodPending {
		t.Errorf("pod %s was released without a controller: phase %s", got.Name, got.Status.Phase)
	}
	compareStates(t, "helm uninstall", before, n.podStates(t, n.listPods(t, meshNS)))
	for _, r := range s.guard.since(t) {
		if r.Kind == "check" {
			t.Errorf("helm uninstall: a container after a wait container started: %s", r)
		}
	}
	if err := n.Cluster.Client.AppsV1().Deployments(meshNS).Delete(ctx, deployment, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitPods(t, meshNS, "no pods left", func(ps []corev1.Pod) bool { return len(ps) == 0 })
}

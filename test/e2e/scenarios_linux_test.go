package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/kubelet"
)

// Scenario 1: one pod is released; its namespace holds exactly the rules its configuration
// renders to; real TCP proves inbound lands on 15006 and outbound on 15001.
func TestOnePod(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "one", nil)
	pod := e.createPods(t, e.meshPods(ns, []string{"app"}))[0]
	pod = e.waitPods(t, ns, []string{pod.Name}, "released", releaseTimeout, released)[pod.Name]

	sb, _ := e.kl.Sandbox(pod.UID)
	ann := pod.Annotations
	if ann[contract.KeyStatus] != "ready" || ann[contract.KeyNetns] != sb.NetnsID || ann[contract.KeyFamilies] != contract.FamiliesIPv4 ||
		ann[contract.KeyRules] == "" || ann[contract.KeyReason] != "" {
		t.Errorf("annotations %v: want ready for %s, ipv4, a rules hash, no reason", ours(ann), sb.NetnsID)
	}
	e.verifyLive(t, pod)
	e.checkInspect(t, pod, 0, "OK")
	e.checkEvent(t, pod, corev1.EventTypeNormal)

	h, err := e.kl.OpenNetns(pod.UID)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	e.checkTraffic(t, h, netip.MustParseAddr(pod.Status.PodIP), harness.DefaultProxyUID)

	// A runtime that does not name its namespaces: found through the pod UID in the cgroup path.
	t.Run("unregistered namespace", func(t *testing.T) {
		pod := e.createPods(t, e.meshPods(ns, []string{"unnamed"}, harness.WithAnnotations(map[string]string{kubelet.AnnotationRegisterNetns: "false"})))[0]
		pod = e.waitPods(t, ns, []string{pod.Name}, "released", releaseTimeout, released)[pod.Name]
		if sb, _ := e.kl.Sandbox(pod.UID); !strings.HasPrefix(sb.NetnsPath, "/proc/") {
			t.Fatalf("the namespace is registered at %s", sb.NetnsPath)
		}
		e.verifyLive(t, pod)
	})
}

// checkInspect runs `istio-pod-network-controller inspect` on the pod as an admin would on the
// node and checks its exit code and verdict.
func (e *environment) checkInspect(t *testing.T, pod *corev1.Pod, wantCode int, wantVerdict string) {
	t.Helper()
	cmd := exec.Command(e.bins.Controller, "inspect", "--kubeconfig="+e.c.AdminKubeconfig, "--netns-dirs="+e.netnsDir,
		"--lock-dir="+t.TempDir(), "-n", pod.Namespace, pod.Name)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != wantCode || !strings.Contains(string(out), wantVerdict) {
		t.Errorf("inspect %s/%s: exit %d, want %d with verdict %s:\n%s", pod.Namespace, pod.Name, code, wantCode, wantVerdict, out)
	}
}

// checkEvent checks that the controller recorded an Event of the type on the pod, and returns the
// messages of those events.
func (e *environment) checkEvent(t *testing.T, pod *corev1.Pod, typ string) []string {
	t.Helper()
	var msgs []string
	e.poll(t, "a "+typ+" Event on "+pod.Name+" from the controller", func() bool {
		list, err := e.c.Client.CoreV1().Events(pod.Namespace).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false
		}
		msgs = msgs[:0]
		for _, ev := range list.Items {
			if ev.InvolvedObject.UID == pod.UID && ev.Type == typ && ev.Source.Component == "istio-pod-network-controller" {
				msgs = append(msgs, ev.Reason+": "+ev.Message)
			}
		}
		return len(msgs) > 0
	})
	return msgs
}

// Scenario 2: 110 pods (a full node) created at once are all released, each exactly once, none
// before its rules verified (checked by the node at the moment each wait process exits).
func TestBurst(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "burst", nil)
	e.createPods(t, e.meshPods(ns, names("p", burstSize)))
	pods := e.waitPods(t, ns, nil, "released", releaseTimeout, released)
	e.checkReleasedOnce(t, ns, pods)
	for _, p := range pods {
		e.verifyLive(t, p)
	}
}

// burstSize is the pods of a burst: the node's capacity.
const burstSize = 110

// checkReleasedOnce checks that every pod's wait container exited exactly once, with 0.
func (e *environment) checkReleasedOnce(t *testing.T, ns string, pods map[string]*corev1.Pod) {
	t.Helper()
	count := map[string]int{}
	for _, x := range e.exitsIn(ns) {
		if x.code != 0 {
			t.Errorf("pod %s: wait container exited %d: %s", x.name, x.code, x.message)
		}
		count[x.name]++
	}
	for name := range pods {
		if count[name] != 1 {
			t.Errorf("pod %s: wait container exited %d times, want once", name, count[name])
		}
	}
}

// Scenario 3: a malformed annotation: the pod is not released; failed + reason annotations, a
// Warning Event, and the reason in the wait container's termination message; nothing programmed.
func TestMalformedAnnotation(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "malformed", nil)
	const key, value = "traffic.sidecar.istio.io/includeInboundPorts", "8080,http"
	pod := e.createPods(t, e.meshPods(ns, []string{"bad"}, harness.WithAnnotations(map[string]string{key: value})))[0]
	pod = e.waitPods(t, ns, []string{"bad"}, "refused", releaseTimeout, func(p *corev1.Pod) bool { return waitTerminated(p) != nil })["bad"]

	reason := pod.Annotations[contract.KeyReason]
	if pod.Annotations[contract.KeyStatus] != "failed" || !strings.Contains(reason, key) || !strings.Contains(reason, value) {
		t.Errorf("annotations %v: want failed and a reason naming %s and %q", ours(pod.Annotations), key, value)
	}
	if term := waitTerminated(pod); term.ExitCode != 4 || !strings.Contains(term.Message, reason) {
		t.Errorf("wait container terminated with %d %q: want exit 4 and the reason %q", term.ExitCode, term.Message, reason)
	}
	if pod.Status.Phase == corev1.PodRunning {
		t.Error("the pod runs")
	}
	events := e.checkEvent(t, pod, corev1.EventTypeWarning)
	if !strings.Contains(strings.Join(events, "\n"), key) {
		t.Errorf("Warning events %q do not name %s", events, key)
	}
	e.checkNotProgrammed(t, pod)
}

// checkNotProgrammed checks that the pod's namespace holds no rules of ours.
func (e *environment) checkNotProgrammed(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	h, err := e.kl.OpenNetns(pod.UID)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	live, err := e.applier.Live(context.Background(), h, string(pod.UID), []rules.Family{rules.IPv4, rules.IPv6})
	if err != nil {
		t.Fatal(err)
	}
	for f, text := range live {
		st, err := netsetup.ParseSave(text)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Empty() {
			t.Errorf("pod %s: its namespace holds %s rules of ours:\n%s", pod.Name, f, text)
		}
	}
}

// Scenario 4: a hostNetwork pod with the wait container and a mesh pod without it are never
// touched: no annotations, no Events, no rules, and the host's rules unchanged (every test checks
// the host's iptables-save before and after).
func TestUntouched(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "untouched", nil)
	before := hostRules(t)
	untouched := e.createPods(t, []*corev1.Pod{
		harness.MeshPod(ns, "hostnet", e.c.NodeName, harness.HostNetwork()),
		harness.MeshPod(ns, "nowait", e.c.NodeName, harness.WithoutWait()),
	})
	e.waitPods(t, ns, []string{"hostnet"}, "waiting", releaseTimeout, waitRunning)
	e.waitPods(t, ns, []string{"nowait"}, "running", releaseTimeout, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	// A mesh pod created afterwards is released: the controller has seen the others by then. Two
	// drift periods later it has also checked what it released.
	e.createPods(t, e.meshPods(ns, []string{"mesh"}))
	e.waitPods(t, ns, []string{"mesh"}, "released", releaseTimeout, released)
	time.Sleep(2 * driftPeriod)

	pods := e.waitPods(t, ns, nil, "listed", time.Minute, func(*corev1.Pod) bool { return true })
	for _, p := range untouched {
		if got := ours(pods[p.Name].Annotations); len(got) > 0 {
			t.Errorf("pod %s was annotated: %v", p.Name, got)
		}
		list, err := e.c.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range list.Items {
			if ev.InvolvedObject.UID == p.UID {
				t.Errorf("pod %s got an Event: %s %s", p.Name, ev.Reason, ev.Message)
			}
		}
	}
	if !waitRunning(pods["hostnet"]) {
		t.Error("the hostNetwork pod's wait container is not waiting any more")
	}
	e.checkNotProgrammed(t, pods["nowait"])
	if after := hostRules(t); after != before {
		t.Errorf("the host's rules changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// Scenario 5: the controller is SIGKILLed at random moments during a 110-pod burst and restarted:
// every pod ends released with correct rules, none released without them.
func TestControllerKilled(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "killed", nil)
	t.Cleanup(func() { e.ensureController(t) })
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	chaos := make(chan struct{})
	go func() {
		defer close(chaos)
		for i := range 4 {
			time.Sleep(time.Duration(50+rng.IntN(700)) * time.Millisecond)
			if err := e.ctrl.Kill(); err != nil {
				t.Errorf("kill %d: %v", i, err)
				return
			}
			down := time.Duration(rng.IntN(400)) * time.Millisecond
			t.Logf("controller SIGKILLed (%d), down for %s", i+1, down)
			time.Sleep(down)
			if err := e.ctrl.Start(context.Background()); err != nil {
				t.Errorf("restart %d: %v", i, err)
				return
			}
		}
	}()
	e.createPods(t, e.meshPods(ns, names("p", burstSize)))
	<-chaos
	pods := e.waitPods(t, ns, nil, "released", releaseTimeout, released)
	e.checkReleasedOnce(t, ns, pods)
	for _, p := range pods {
		e.verifyLive(t, p)
	}
}

// ensureController starts the controller if a test left it stopped.
func (e *environment) ensureController(t testing.TB) {
	if e.ctrl.PID() == 0 {
		if err := e.ctrl.Start(context.Background()); err != nil {
			t.Errorf("restart the controller: %v", err)
		}
	}
}

// Scenario 6: the API server crashes (SIGKILL) in the middle of a 110-pod burst and comes back a
// second later: the controller recovers without a restart of its own and every pod is released.
func TestAPIServerRestart(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "apirestart", nil)
	pid := e.ctrl.PID()
	created := make(chan struct{})
	go func() {
		defer close(created)
		e.createPods(t, e.meshPods(ns, names("p", burstSize)))
	}()
	// Stop it once a third of the pods have their IPs.
	e.poll(t, "a third of the burst to get IPs", func() bool {
		list, err := e.c.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
		n := 0
		for i := range list.Items {
			if err == nil && list.Items[i].Status.PodIP != "" {
				n++
			}
		}
		return n >= burstSize/3
	})
	e.logProgress(t, ns, "killing the API server")
	if err := e.c.KillAPIServer(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := e.c.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.logProgress(t, ns, "API server restarted")
	<-created
	pods := e.waitPods(t, ns, nil, "released", releaseTimeout, released)
	if len(pods) != burstSize {
		t.Fatalf("%d pods, want %d", len(pods), burstSize)
	}
	e.checkReleasedOnce(t, ns, pods)
	if got := e.ctrl.PID(); got != pid {
		t.Errorf("the controller restarted (pid %d, was %d): it must recover by itself", got, pid)
	}
}

// logProgress logs how many pods of ns exist, have IPs and are released.
func (e *environment) logProgress(t *testing.T, ns, what string) {
	list, err := e.c.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Logf("%s: %v", what, err)
		return
	}
	ips, rel := 0, 0
	for i := range list.Items {
		if list.Items[i].Status.PodIP != "" {
			ips++
		}
		if released(&list.Items[i]) {
			rel++
		}
	}
	t.Logf("%s: %d pods created, %d with IPs, %d released", what, len(list.Items), ips, rel)
}

// Scenario 7: rules flushed in running pods are restored within the drift period.
func TestDriftRepair(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "drift", nil)
	e.createPods(t, e.meshPods(ns, names("p", 3)))
	pods := e.waitPods(t, ns, nil, "released", releaseTimeout, released)
	before := e.metric(t, "istio_pod_network_controller_drift_repairs_total")
	flushed := time.Now()
	for _, p := range pods {
		e.flushIPTablesNat(t, p)
	}
	// The drift check runs every period: waitRepaired allows one full period plus the time to act
	// on it on a busy machine.
	e.waitRepaired(t, slices.Collect(maps.Values(pods)), flushed)
	t.Logf("rules of %d pods restored %s after the flush (drift period %s)", len(pods), time.Since(flushed).Round(time.Millisecond), driftPeriod)
	if after := e.metric(t, "istio_pod_network_controller_drift_repairs_total"); after-before < float64(len(pods)) {
		t.Errorf("drift_repairs_total went from %v to %v, want +%d", before, after, len(pods))
	}
	for _, p := range pods {
		if evs := e.checkEvent(t, p, corev1.EventTypeWarning); !strings.Contains(strings.Join(evs, "\n"), "DriftRepaired") {
			t.Errorf("pod %s: Warning events %q, want DriftRepaired", p.Name, evs)
		}
	}
}

// liveVerifies reports whether the pod's namespace holds exactly its rules.
func (e *environment) liveVerifies(p *corev1.Pod) bool {
	h, err := e.kl.OpenNetns(p.UID)
	if err != nil {
		return false
	}
	defer h.Close()
	cfg, err := podconfig.FromPod(p)
	if err != nil {
		return false
	}
	_, err = e.verifierFor(context.Background(), p.Annotations, "", h).Verify(context.Background(), h, string(p.UID), cfg)
	return err == nil
}

// metric returns the value of an unlabelled series of the controller's /metrics.
func (e *environment) metric(t *testing.T, name string) float64 {
	t.Helper()
	text, err := e.ctrl.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", name, line)
			}
			return f
		}
	}
	t.Fatalf("metric %s not exposed", name)
	return 0
}

// Scenario 8: a re-created sandbox (new namespace; same IP, or a new one) is programmed and the pod
// released again; the wait container refuses the stale annotation of the old namespace meanwhile.
func TestSandboxRecreated(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "recreate", nil)
	e.createPods(t, e.meshPods(ns, []string{"same-ip", "new-ip"}))
	pods := e.waitPods(t, ns, nil, "released", releaseTimeout, released)
	old, oldIP := map[string]string{}, map[string]string{}
	for name, p := range pods {
		sb, _ := e.kl.Sandbox(p.UID)
		old[name], oldIP[name] = sb.NetnsID, p.Status.PodIP
		if _, err := e.kl.Recreate(context.Background(), p.UID, name == "new-ip"); err != nil {
			t.Fatal(err)
		}
	}
	pods = e.waitPods(t, ns, nil, "released again", releaseTimeout, func(p *corev1.Pod) bool {
		return released(p) && waitStatus(p).RestartCount == 1
	})
	for name, p := range pods {
		sb, _ := e.kl.Sandbox(p.UID)
		if sb.NetnsID == old[name] || sb.Generation != 2 {
			t.Errorf("pod %s: sandbox %+v is not a new one (old namespace %s)", name, sb, old[name])
		}
		if sameIP := p.Status.PodIP == oldIP[name]; sameIP != (name == "same-ip") || sb.IPs[0].String() != p.Status.PodIP {
			t.Errorf("pod %s: IP %s (was %s), sandbox IPs %v", name, p.Status.PodIP, oldIP[name], sb.IPs)
		}
		if logs := e.kl.WaitLogs(p.UID); !strings.Contains(logs, "stale") {
			t.Errorf("pod %s: the second wait container never saw the stale annotation:\n%s", name, logs)
		}
		e.verifyLive(t, p)
		e.checkEvent(t, p, corev1.EventTypeNormal)
	}
}

// Scenario 9: an ordinary user with pods and pods/status rights cannot forge the controller's
// annotations: the chart's admission policy rejects it through both; and with admission off the
// forged status=ready still releases nothing (the wait container checks the namespace identity and
// that the redirect works).
func TestForgedAnnotations(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "forged", nil)
	ctx := context.Background()
	mallory := e.ordinaryUser(t, ns, "mallory")
	forged := map[string]string{contract.KeyStatus: "ready", contract.KeyNetns: "cookie:1", contract.KeyRules: "0000", contract.KeyFamilies: "ipv4"}

	// With the policy: rejected on create, through pods and through pods/status.
	target := e.createPods(t, []*corev1.Pod{harness.MeshPod(ns, "target", e.c.NodeName, harness.WithoutWait())})[0]
	e.poll(t, "the admission policy to reject a forged annotation", func() bool {
		return isPolicyDenial(patchAnnotations(ctx, mallory, target, attempt(forged), ""))
	})
	if err := patchAnnotations(ctx, mallory, target, attempt(forged), "status"); !isPolicyDenial(err) {
		t.Errorf("forged annotations through pods/status: %v, want the policy's denial", err)
	}
	withForged := harness.MeshPod(ns, "precooked", e.c.NodeName, harness.WithAnnotations(forged))
	if _, err := mallory.CoreV1().Pods(ns).Create(ctx, withForged, metav1.CreateOptions{}); !isPolicyDenial(err) {
		t.Errorf("a pod created with the controller's annotations: %v, want the policy's denial", err)
	}
	// Other annotations stay the user's to change.
	if err := patchAnnotations(ctx, mallory, target, map[string]string{"example.com/note": "mine"}, ""); err != nil {
		t.Errorf("an ordinary annotation: %v", err)
	}

	// Admission off (the policy bindings deleted), the controller stopped so that only the forger
	// writes the annotations: the wait container keeps waiting.
	if err := e.ctrl.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.ensureController(t) })
	bindings := e.install.AdmissionPolicyBindings()
	if err := e.install.Applier.Delete(ctx, bindings...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.restorePolicy(t, ns, mallory) })
	victim := e.createPods(t, e.meshPods(ns, []string{"victim"}))[0]
	victim = e.waitPods(t, ns, []string{"victim"}, "waiting", releaseTimeout, waitRunning)["victim"]
	e.poll(t, "admission to let a forged annotation through", func() bool {
		return patchAnnotations(ctx, mallory, victim, attempt(forged), "status") == nil
	})
	e.poll(t, "the wait container to refuse the annotation of another namespace", func() bool {
		return strings.Contains(e.kl.WaitLogs(victim.UID), "stale")
	})
	// Even the right namespace identity (an attacker on the node could learn it) releases nothing
	// without working rules.
	sb, _ := e.kl.Sandbox(victim.UID)
	forged[contract.KeyNetns] = sb.NetnsID
	if err := patchAnnotations(ctx, mallory, victim, forged, "status"); err != nil {
		t.Fatal(err)
	}
	e.poll(t, "the wait container's self-test to fail", func() bool {
		return strings.Contains(e.kl.WaitLogs(victim.UID), "self-test fails")
	})
	if p, err := e.c.Client.CoreV1().Pods(ns).Get(ctx, "victim", metav1.GetOptions{}); err != nil || !waitRunning(p) {
		t.Fatalf("victim: want its wait container still waiting (err %v)", err)
	}

	// Negative control of the release invariant: had the wait container released the victim now,
	// the check would have caught it.
	if v, err := e.c.Client.CoreV1().Pods(ns).Get(ctx, "victim", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if h, err := e.kl.OpenNetns(v.UID); err != nil {
		t.Fatal(err)
	} else {
		problem := e.checkRelease(ctx, kubelet.WaitExit{Pod: v, Sandbox: sb, Netns: h})
		h.Close()
		if !strings.Contains(problem, "do not verify") {
			t.Errorf("the release check on an unprogrammed namespace with forged annotations says %q, want a verification failure", problem)
		}
	}

	// Admission back on, the controller back: the victim is programmed and released for real.
	e.restorePolicy(t, ns, mallory)
	e.ensureController(t)
	victim = e.waitPods(t, ns, []string{"victim"}, "released", releaseTimeout, released)["victim"]
	e.verifyLive(t, victim)
}

// ordinaryUser returns a client for a ServiceAccount of ns allowed to create, update and patch pods
// and pods/status there (a tenant with more rights than usual), not bound to any pod.
func (e *environment) ordinaryUser(t *testing.T, ns, name string) kubernetes.Interface {
	t.Helper()
	ctx := context.Background()
	cs := e.c.Client
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"pods", "pods/status"},
		Verbs: []string{"get", "list", "watch", "create", "update", "patch"},
	}}}
	if _, err := cs.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}}}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(e.c.ConfigForToken(tok.Status.Token))
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// restorePolicy applies the chart's policy bindings again and waits until they are enforced.
func (e *environment) restorePolicy(t testing.TB, ns string, user kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	if err := e.install.Applier.Apply(ctx, e.install.AdmissionPolicyBindings()...); err != nil {
		t.Fatal(err)
	}
	probe := e.createPods(t, []*corev1.Pod{harness.MeshPod(ns, fmt.Sprintf("probe-%d", time.Now().UnixNano()), e.c.NodeName, harness.WithoutWait())})[0]
	e.poll(t, "the admission policy to be enforced again", func() bool {
		return isPolicyDenial(patchAnnotations(ctx, user, probe, attempt(map[string]string{contract.KeyStatus: "ready"}), ""))
	})
}

// patchAnnotations merge-patches annotations on pod as client, through the subresource ("" for
// the pod itself).
func patchAnnotations(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, ann map[string]string, subresource string) error {
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	var sub []string
	if subresource != "" {
		sub = []string{subresource}
	}
	_, err := client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, body, metav1.PatchOptions{}, sub...)
	return err
}

// isPolicyDenial reports whether err is the chart's annotation policy refusing the request.
func isPolicyDenial(err error) bool {
	return err != nil && (apierrors.IsForbidden(err) || apierrors.IsInvalid(err)) &&
		strings.Contains(err.Error(), "ValidatingAdmissionPolicy")
}

// attempt returns forged annotations that differ from the previous call's: an update that changes
// nothing passes any policy, so polling must change the value each time.
func attempt(ann map[string]string) map[string]string {
	out := map[string]string{contract.KeyReason: strconv.FormatInt(time.Now().UnixNano(), 10)}
	for k, v := range ann {
		out[k] = v
	}
	return out
}

// Scenario 10: in a namespace enforcing Pod Security "restricted", pods exactly as the chart's
// injection template makes them (Istio's injector output, test/injection/testdata) are admitted
// and released, including a custom proxy UID (OpenShift-style 1000670000) and a native-sidecar
// proxy; a TPROXY pod is refused by Pod Security (istio-proxy needs NET_ADMIN there).
func TestRestrictedNamespace(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "restricted", map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"})
	root, err := harness.ModuleRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "test/injection/testdata/injected-*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no injector output in test/injection/testdata (%v)", err)
	}
	var mesh, none []string
	var pods []*corev1.Pod
	for _, f := range files {
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "injected-"), ".yaml")
		pod, err := harness.LoadPod(f)
		if err != nil {
			t.Fatal(err)
		}
		pod.ObjectMeta = metav1.ObjectMeta{Namespace: ns, Name: name, Labels: pod.Labels, Annotations: pod.Annotations}
		pod.Spec.NodeName = e.c.NodeName
		pod.Status = corev1.PodStatus{}
		if name == "tproxy" {
			_, err := e.c.Client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "restricted") {
				t.Errorf("TPROXY pod in a restricted namespace: %v, want Pod Security's refusal", err)
			}
			continue
		}
		if hasInit(pod, harness.WaitContainer) {
			mesh = append(mesh, name)
		} else {
			none = append(none, name)
		}
		pods = append(pods, pod)
	}
	pods = append(pods, harness.MeshPod(ns, "uid-1000670000", e.c.NodeName, harness.WithProxyUID(1000670000)))
	mesh = append(mesh, "uid-1000670000")
	created := e.createPods(t, pods)
	for _, p := range created {
		if hasInit(p, harness.WaitContainer) && p.Spec.InitContainers[0].Name != harness.WaitContainer {
			t.Errorf("pod %s: init containers %v: the wait container must come first", p.Name, initNames(p))
		}
	}
	got := e.waitPods(t, ns, mesh, "released", releaseTimeout, released)
	for _, name := range mesh {
		e.verifyLive(t, got[name])
	}
	if !slices.Contains(mesh, "custom-uid") || !slices.Contains(mesh, "openshift-namespace") {
		t.Errorf("mesh pods %v: want the custom-uid and openshift-namespace cases among them", mesh)
	}
	// Interception mode NONE: no wait container, nothing to program, runs at once.
	if len(none) > 0 {
		all := e.waitPods(t, ns, none, "running", releaseTimeout, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
		for _, name := range none {
			if got := ours(all[name].Annotations); len(got) > 0 {
				t.Errorf("pod %s without the wait container was annotated: %v", name, got)
			}
		}
	}
}

func hasInit(p *corev1.Pod, name string) bool { return slices.Contains(initNames(p), name) }

func initNames(p *corev1.Pod) []string {
	var out []string
	for _, c := range p.Spec.InitContainers {
		out = append(out, c.Name)
	}
	return out
}

// Scenario 11: a dual-stack pod: both families programmed, both self-tested by the wait container,
// traffic proven on both.
func TestDualStack(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "dual", nil)
	e.createPods(t, e.meshPods(ns, []string{"dual"}, harness.DualStack()))
	pod := e.waitPods(t, ns, []string{"dual"}, "released", releaseTimeout, released)["dual"]
	if len(pod.Status.PodIPs) != 2 {
		t.Fatalf("pod IPs %v: want IPv4 and IPv6", pod.Status.PodIPs)
	}
	if got := pod.Annotations[contract.KeyFamilies]; got != contract.FamiliesDual {
		t.Errorf("%s=%q, want %q", contract.KeyFamilies, got, contract.FamiliesDual)
	}
	e.verifyLive(t, pod)
	if logs := e.kl.WaitLogs(pod.UID); !strings.Contains(logs, "families=ipv4,ipv6") {
		t.Errorf("the wait container did not self-test both families:\n%s", logs)
	}
	h, err := e.kl.OpenNetns(pod.UID)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, ip := range pod.Status.PodIPs {
		t.Run(ip.IP, func(t *testing.T) {
			e.checkTraffic(t, h, netip.MustParseAddr(ip.IP), harness.DefaultProxyUID)
		})
	}
}

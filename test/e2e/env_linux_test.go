package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/kubelet"
)

// driftPeriod is the controller's --drift-period in these tests.
const driftPeriod = 2 * time.Second

// releaseTimeout bounds how long a scenario waits for pods to be released.
const releaseTimeout = 2 * time.Minute

// The environment is shared by every test and benchmark of the package: one control plane, one
// simulated node, one chart installation, one controller (restarted by the scenarios that kill it).
var (
	envOnce sync.Once
	env     *environment
	envErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if env != nil {
		keep := code != 0 || os.Getenv("E2E_KEEP") != ""
		if keep {
			fmt.Fprintf(os.Stderr, "e2e: logs kept in %s\n", env.dir)
		}
		env.stop(!keep)
	}
	os.Exit(code)
}

// environment is the running system under test.
type environment struct {
	dir      string
	c        *cluster.Cluster
	bins     harness.Binaries
	probe    string // the TCP client run inside pods
	kl       *kubelet.Kubelet
	netnsDir string
	install  *harness.Install
	ctrl     *harness.Controller
	applier  *netsetup.Applier // verifies pods' rules, read-only
	auditLog string

	// noReleaseCheck turns the release invariant check off (benchmarks: it runs iptables-save in
	// every pod as it is released, competing with the controller for the CPU).
	noReleaseCheck atomic.Bool

	mu    sync.Mutex
	exits []waitExit // every wait process exit, in order
}

// waitExit is one exit of a wait process, with what the invariant check found at that moment.
type waitExit struct {
	at        time.Time
	uid       types.UID
	namespace string
	name      string
	code      int
	message   string
	netnsID   string
	problem   string // why this release broke the invariant; "" when it held (or the exit was not a release)
}

// setup returns the shared environment, starting it on first use. It skips or fails the test per
// the E2E/CI gate and root.
func setup(t testing.TB) *environment {
	t.Helper()
	cluster.Require(t)
	testutil.RequireRoot(t)
	envOnce.Do(func() { env, envErr = start() })
	if envErr != nil {
		t.Fatalf("start the end-to-end environment: %v", envErr)
	}
	return env
}

// start brings up everything: binaries, control plane (with an audit log of the controller's
// requests), simulated node, chart, controller.
func start() (_ *environment, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute) // a cold tool build fits
	defer cancel()
	dir, err := os.MkdirTemp("", "e2e-")
	if err != nil {
		return nil, err
	}
	e := &environment{dir: dir, netnsDir: filepath.Join(dir, "netns")}
	defer func() {
		if err != nil {
			e.stop(false)
			err = fmt.Errorf("%w (logs in %s)", err, dir)
		}
	}()
	log, err := os.Create(filepath.Join(dir, "setup.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	bin := filepath.Join(dir, "bin")
	if e.bins, err = harness.Build(ctx, bin); err != nil {
		return nil, err
	}
	if err := harness.GoBuild(ctx, bin, "./test/e2e/probe"); err != nil {
		return nil, err
	}
	e.probe = filepath.Join(bin, "probe")
	// Pod processes run as other UIDs: they must reach the probe.
	for _, d := range []string{dir, bin} {
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, err
		}
	}
	auditPolicy := filepath.Join(dir, "audit-policy.yaml")
	e.auditLog = filepath.Join(dir, "audit.log")
	if err := os.WriteFile(auditPolicy, []byte(auditPolicyYAML), 0o644); err != nil {
		return nil, err
	}
	if e.c, err = cluster.Start(ctx, cluster.Options{Dir: filepath.Join(dir, "cluster"), Log: log,
		ExtraAPIServerArgs: []string{"--audit-policy-file=" + auditPolicy, "--audit-log-path=" + e.auditLog,
			"--audit-log-maxsize=0"}}); err != nil {
		return nil, err
	}
	if e.applier, err = netsetup.NewApplier(ctx, netsetup.Options{LockDir: filepath.Join(dir, "verify-locks")}); err != nil {
		return nil, err
	}
	klog, err := os.Create(filepath.Join(dir, "kubelet.log"))
	if err != nil {
		return nil, err
	}
	// The simulated kubelet writes pod status as a kubelet does, as system:node:<node> (the
	// chart's admission policy lets only the pod's node change its IPs).
	nodeConf, err := e.c.NodeConfig(e.c.NodeName)
	if err != nil {
		return nil, err
	}
	nodeClient, err := kubernetes.NewForConfig(nodeConf)
	if err != nil {
		return nil, err
	}
	if e.kl, err = kubelet.Start(ctx, kubelet.Options{
		Client: nodeClient, WaitBinary: e.bins.Wait, StateDir: filepath.Join(dir, "node"),
		NetnsDir: e.netnsDir, Log: klog, OnWaitExit: e.onWaitExit,
	}); err != nil {
		return nil, err
	}
	if e.install, err = harness.InstallChart(ctx, e.c, harness.InstallOptions{Dir: dir, Log: log}); err != nil {
		return nil, err
	}
	if e.ctrl, err = harness.StartController(ctx, harness.ControllerOptions{
		Binary: e.bins.Controller, Kubeconfig: e.install.Kubeconfig, NodeName: e.c.NodeName,
		NetnsDirs: e.netnsDir, LockDir: filepath.Join(dir, "locks"), DriftPeriod: driftPeriod,
		Args: append([]string{"-v=2"}, recordArgs(e.kl)...), LogPath: filepath.Join(dir, "controller.log"),
	}); err != nil {
		return nil, err
	}
	return e, nil
}

// auditPolicyYAML records the requests of every ServiceAccount of istio-system (the controller's)
// and nothing else: the benchmarks count them.
const auditPolicyYAML = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts:istio-system"]
- level: None
`

func (e *environment) stop(removeDir bool) {
	if e.ctrl != nil {
		_ = e.ctrl.Stop(10 * time.Second)
	}
	if e.kl != nil {
		_ = e.kl.Stop()
	}
	if e.c != nil {
		_ = e.c.Stop()
	}
	if removeDir {
		_ = os.RemoveAll(e.dir)
	}
}

// onWaitExit is the simulated kubelet's hook: at the moment a wait process exits 0, before the pod
// is reported released, its namespace must hold exactly the rules of its configuration, and the
// annotations must name that namespace and those rules.
func (e *environment) onWaitExit(ctx context.Context, x kubelet.WaitExit) {
	rec := waitExit{at: time.Now(), uid: x.Pod.UID, namespace: x.Pod.Namespace, name: x.Pod.Name,
		code: x.ExitCode, message: x.Message, netnsID: x.Sandbox.NetnsID}
	if x.ExitCode == 0 && !e.noReleaseCheck.Load() {
		rec.problem = e.checkRelease(ctx, x)
	}
	e.mu.Lock()
	e.exits = append(e.exits, rec)
	e.mu.Unlock()
}

func (e *environment) checkRelease(ctx context.Context, x kubelet.WaitExit) string {
	ann := x.Pod.Annotations
	wantRules, wantFamilies := ann[contract.KeyRules], ann[contract.KeyFamilies]
	switch {
	case x.Netns == nil:
		return "a hostNetwork pod was released"
	case ann[contract.KeyStatus] != string(contract.StatusReady) || ann[contract.KeyNetns] != x.Sandbox.NetnsID:
		// Released before the annotations named this namespace: the release record must have.
		var problem string
		if wantRules, wantFamilies, problem = releaseByRecord(x); problem != "" {
			return fmt.Sprintf("released while %s=%q %s=%q in namespace %s: %s", contract.KeyStatus, ann[contract.KeyStatus],
				contract.KeyNetns, ann[contract.KeyNetns], x.Sandbox.NetnsID, problem)
		}
	}
	cfg, err := podconfig.FromPod(withIPs(x.Pod, x.Sandbox.IPs)) // the namespace's addresses, as the controller programs them
	if err != nil {
		return "released with an invalid configuration: " + err.Error()
	}
	res, err := e.verifierFor(ctx, ann, x.Sandbox.NetnsID, x.Netns).Verify(ctx, x.Netns, string(x.Pod.UID), cfg)
	if err == nil && (res.Hash != wantRules || res.Families != wantFamilies) {
		// Annotations that lag behind or were forged (admission off) do not explain the release; the
		// controller's record in the namespace may (the wait container accepts either).
		if rules, families, problem := releaseByRecord(x); problem == "" {
			wantRules, wantFamilies = rules, families
		}
	}
	switch {
	case err != nil:
		return "released, but its rules do not verify: " + err.Error()
	case res.Hash != wantRules:
		return fmt.Sprintf("released with %s=%q, the live rules hash to %q", contract.KeyRules, wantRules, res.Hash)
	case res.Families != wantFamilies:
		return fmt.Sprintf("released with %s=%q, the rules cover %q", contract.KeyFamilies, wantFamilies, res.Families)
	}
	return ""
}

// exitsIn returns the wait exits of pods of namespace ns.
func (e *environment) exitsIn(ns string) []waitExit {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []waitExit
	for _, x := range e.exits {
		if x.namespace == ns {
			out = append(out, x)
		}
	}
	return out
}

// checkInvariant fails the test for every release in ns that broke the invariant.
func (e *environment) checkInvariant(t testing.TB, ns string) {
	t.Helper()
	for _, x := range e.exitsIn(ns) {
		if x.problem != "" {
			t.Errorf("pod %s/%s: %s", x.namespace, x.name, x.problem)
		}
	}
}

// namespace creates a fresh namespace for a test (labels optional). When the test ends it checks
// the release invariant, deletes the namespace's pods and waits until the node has removed their
// sandboxes, checks that the host's iptables rules are as they were, and on failure prints the
// controller's log and the wait logs of pods that were not released.
func (e *environment) namespace(t testing.TB, prefix string, labels map[string]string) string {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := prefix + "-" + hex.EncodeToString(b)
	ctx := context.Background()
	if _, err := e.c.EnsureNamespace(ctx, name, labels); err != nil {
		t.Fatal(err)
	}
	before := hostRules(t)
	t.Cleanup(func() {
		e.checkInvariant(t, name)
		if t.Failed() {
			e.report(t, name)
		}
		e.deletePods(t, name)
		if after := hostRules(t); after != before {
			t.Errorf("the host's iptables rules changed during the test:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
	return name
}

// report prints what helps to understand a failure.
func (e *environment) report(t testing.TB, ns string) {
	t.Logf("controller:%s", e.ctrl.LogTail(60))
	pods, err := e.c.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return
	}
	shown := 0
	for _, p := range pods.Items {
		if !released(&p) && shown < 3 {
			shown++
			t.Logf("pod %s not released: phase %s, annotations %v\nwait logs:\n%s", p.Name, p.Status.Phase, ours(p.Annotations), e.kl.WaitLogs(p.UID))
		}
	}
	t.Logf("logs: %s (controller.log, kubelet.log, cluster/)", e.dir)
}

// deletePods deletes every pod of ns and waits until the simulated node has removed their sandboxes.
func (e *environment) deletePods(t testing.TB, ns string) {
	ctx := context.Background()
	pods, err := e.c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Errorf("list pods of %s: %v", ns, err)
		return
	}
	if err := e.c.Client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}, metav1.ListOptions{}); err != nil {
		t.Errorf("delete pods of %s: %v", ns, err)
		return
	}
	deadline := time.Now().Add(time.Minute)
	for _, p := range pods.Items {
		for {
			if _, ok := e.kl.Sandbox(p.UID); !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("pod %s/%s: the node did not remove its sandbox after deletion", ns, p.Name)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// hostRules is the host namespace's iptables state, both backends and families, without counters.
func hostRules(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	for _, tool := range []string{"iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"} {
		out, err := exec.Command(tool).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", tool, err, out)
		}
		fmt.Fprintf(&b, "## %s\n", tool)
		for line := range strings.Lines(string(out)) {
			if !strings.HasPrefix(line, "#") {
				b.WriteString(counters.ReplaceAllString(line, "[-]"))
			}
		}
	}
	return b.String()
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// createPods creates pods concurrently (16 at a time) and returns them as created.
func (e *environment) createPods(t testing.TB, pods []*corev1.Pod) []*corev1.Pod {
	t.Helper()
	out := make([]*corev1.Pod, len(pods))
	errs := make([]error, len(pods))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			for attempt := 0; ; attempt++ { // the API server may be restarting
				out[i], errs[i] = e.c.Client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{})
				if attempt > 0 && apierrors.IsAlreadyExists(errs[i]) { // created before the connection broke
					out[i], errs[i] = e.c.Client.CoreV1().Pods(p.Namespace).Get(context.Background(), p.Name, metav1.GetOptions{})
				}
				if errs[i] == nil || attempt == 100 || !retriable(errs[i]) {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("create pod %s: %v", pods[i].Name, err)
		}
	}
	return out
}

func retriable(err error) bool {
	s := err.Error()
	return strings.Contains(s, "connection refused") || strings.Contains(s, "EOF") || strings.Contains(s, "connection reset")
}

// waitPods polls the pods of ns until cond holds for every pod named (all pods of ns when names is
// nil) or the timeout passes, and returns them.
func (e *environment) waitPods(t testing.TB, ns string, names []string, what string, timeout time.Duration, cond func(*corev1.Pod) bool) map[string]*corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var pending []string
	for {
		list, err := e.c.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
		if err == nil {
			byName := map[string]*corev1.Pod{}
			for i := range list.Items {
				byName[list.Items[i].Name] = &list.Items[i]
			}
			want := names
			if want == nil {
				for n := range byName {
					want = append(want, n)
				}
			}
			pending = pending[:0]
			for _, n := range want {
				if p := byName[n]; p == nil || !cond(p) {
					pending = append(pending, n)
				}
			}
			if len(pending) == 0 {
				return byName
			}
		}
		if time.Now().After(deadline) {
			if len(pending) > 5 {
				pending = append(pending[:5], "...")
			}
			t.Fatalf("timed out after %s waiting for pods of %s to be %s; not yet: %v (last error: %v)", timeout, ns, what, pending, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// released reports whether the pod's wait container exited 0 and the pod runs, and the controller's
// annotations have caught up (a pod released through the release record can run before the
// controller's patch is in: the record is written first).
func released(p *corev1.Pod) bool {
	st := p.Annotations[contract.KeyStatus]
	return p.Status.Phase == corev1.PodRunning && waitTerminated(p) != nil && waitTerminated(p).ExitCode == 0 &&
		st != "" && st != string(contract.StatusPending)
}

// waitStatus returns the wait container's status.
func waitStatus(p *corev1.Pod) *corev1.ContainerStatus {
	for i := range p.Status.InitContainerStatuses {
		if p.Status.InitContainerStatuses[i].Name == harness.WaitContainer {
			return &p.Status.InitContainerStatuses[i]
		}
	}
	return nil
}

func waitTerminated(p *corev1.Pod) *corev1.ContainerStateTerminated {
	if s := waitStatus(p); s != nil {
		return s.State.Terminated
	}
	return nil
}

// waitRunning reports whether the wait container runs (the pod has its IP and is not released).
func waitRunning(p *corev1.Pod) bool {
	s := waitStatus(p)
	return s != nil && s.State.Running != nil && p.Status.PodIP != ""
}

// ours returns the controller's annotations.
func ours(ann map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range ann {
		if strings.HasPrefix(k, contract.Prefix) {
			out[k] = v
		}
	}
	return out
}

// names returns n pod names prefix-0 ... prefix-(n-1).
func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// meshPods returns mesh pods named names in ns on the node.
func (e *environment) meshPods(ns string, names []string, opts ...harness.PodOption) []*corev1.Pod {
	out := make([]*corev1.Pod, len(names))
	for i, n := range names {
		out[i] = harness.MeshPod(ns, n, e.c.NodeName, opts...)
	}
	return out
}

// verifyLive checks that the pod's current namespace holds exactly the rules of its configuration,
// as released (annotations) and for the namespace it runs in.
func (e *environment) verifyLive(t testing.TB, p *corev1.Pod) {
	t.Helper()
	sb, ok := e.kl.Sandbox(p.UID)
	if !ok {
		t.Fatalf("pod %s: no sandbox", p.Name)
	}
	if p.Annotations[contract.KeyNetns] != sb.NetnsID {
		// Released through the record, the annotations follow: wait for them.
		testutil.Eventually(t, time.Minute, "pod "+p.Name+"'s annotations to name its namespace "+sb.NetnsID, func() bool {
			cur, err := e.c.Client.CoreV1().Pods(p.Namespace).Get(context.Background(), p.Name, metav1.GetOptions{})
			if err == nil && cur.UID == p.UID {
				p = cur
			}
			return p.Annotations[contract.KeyNetns] == sb.NetnsID
		})
	}
	h, err := e.kl.OpenNetns(p.UID)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cfg, err := podconfig.FromPod(p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.verifierFor(context.Background(), p.Annotations, sb.NetnsID, h).Verify(context.Background(), h, string(p.UID), cfg)
	if err != nil {
		t.Errorf("pod %s: %v", p.Name, err)
		return
	}
	if res.Hash != p.Annotations[contract.KeyRules] || res.Families != p.Annotations[contract.KeyFamilies] {
		t.Errorf("pod %s: annotations %v, live rules hash %q families %q", p.Name, ours(p.Annotations), res.Hash, res.Families)
	}
}

func ptr[T any](v T) *T { return &v }

// poll waits until cond holds, a minute at most.
func (e *environment) poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, time.Minute, what, cond)
}

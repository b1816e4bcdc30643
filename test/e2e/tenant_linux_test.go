package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

// forgeDuration is how long the tenant keeps its pod's IPs pointed at the victim's.
const forgeDuration = 20 * time.Second

// TestTenantForgesPodIPs: a tenant holding pods/status points its pod X's status.podIPs at the IP
// of a released victim V on the same node. With the chart's policy the API server refuses it (only
// the pod's node may change pod IPs). Without the policy (a cluster that does not install it), the
// tenant keeps X's IPs on V's for 20 s across a controller restart: V's live rules (read from V's
// namespace) and annotations never change, X (interceptionMode NONE, whose rules would delete V's
// redirect) stays pending with a reason saying that the namespace holding the IP is not proven to
// be X's (or is V's), and X's wait container keeps waiting.
func TestTenantForgesPodIPs(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "tenant", nil)
	ctx := context.Background()
	tenant := e.ordinaryUser(t, ns, "tenant")

	v := e.createPods(t, e.meshPods(ns, []string{"victim"}))[0]
	v = e.waitPods(t, ns, []string{"victim"}, "released", releaseTimeout, released)["victim"]
	e.verifyLive(t, v)
	victimIP, victimAnn := v.Status.PodIP, ours(v.Annotations)
	liveBefore := e.liveRules(t, v)

	// The tenant's pod, its wait container running, not yet released: the controller is stopped.
	if err := e.ctrl.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.ensureController(t) })
	none := harness.WithAnnotations(map[string]string{istioapi.AnnotationInterceptionMode: "NONE"})
	x := e.createPods(t, e.meshPods(ns, []string{"tenant"}, none))[0]
	x = e.waitPods(t, ns, []string{"tenant"}, "waiting", releaseTimeout, waitRunning)["tenant"]

	// With the policy: refused.
	if err := forgeIPs(ctx, tenant, x, victimIP); !isPolicyDenial(err) || !strings.Contains(err.Error(), "may change status.podIP or status.podIPs") {
		t.Fatalf("tenant changes its pod's IPs with the policy on: %v, want the policy's denial", err)
	}

	// Without it.
	if err := e.install.Applier.Delete(ctx, e.install.AdmissionPolicyBindings()...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.restorePolicy(t, ns, tenant) })
	e.poll(t, "admission to let the forged IPs through", func() bool { return forgeIPs(ctx, tenant, x, victimIP) == nil })
	e.ensureController(t) // a fresh controller: its claims come from the released pods' annotations

	deadline := time.Now().Add(forgeDuration)
	var forged, checks int
	for time.Now().Before(deadline) {
		cur, err := e.c.Client.CoreV1().Pods(ns).Get(ctx, "tenant", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cur.Status.PodIP != victimIP { // the kubelet wrote the real IP back: forge again
			if err := forgeIPs(ctx, tenant, cur, victimIP); err != nil {
				t.Fatalf("forge: %v", err)
			}
			forged++
		}
		if got := ours(cur.Annotations); got[contract.KeyNetns] == victimAnn[contract.KeyNetns] {
			t.Fatalf("the tenant's pod was annotated with the victim's namespace: %v", got)
		}
		vNow, err := e.c.Client.CoreV1().Pods(ns).Get(ctx, "victim", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := ours(vNow.Annotations); !maps.Equal(got, victimAnn) {
			t.Fatalf("the victim's annotations changed: %v, were %v", got, victimAnn)
		}
		if live := e.liveRules(t, vNow); live != liveBefore {
			t.Fatalf("the victim's live rules changed:\n%s\nwere\n%s", live, liveBefore)
		}
		checks++
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d checks in %s; the forged IPs written again %d times", checks, forgeDuration, forged)

	x, err := e.c.Client.CoreV1().Pods(ns).Get(ctx, "tenant", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := ours(x.Annotations)
	reason := got[contract.KeyReason]
	if forged > 0 && got[contract.KeyStatus] == string(contract.StatusReady) {
		// The kubelet wrote the real IP back in between: the controller may then have released
		// the pod into its own namespace, and only there.
		if sb, ok := e.kl.Sandbox(x.UID); !ok || got[contract.KeyNetns] != sb.NetnsID {
			t.Fatalf("tenant pod released into %s, not its own namespace", got[contract.KeyNetns])
		}
		t.Logf("the kubelet restored the real IP %d times; the tenant's pod was released into its own namespace", forged)
		return
	}
	if got[contract.KeyStatus] != string(contract.StatusPending) ||
		!(strings.Contains(reason, "not proven to be the pod's") || strings.Contains(reason, "claimed by another pod") ||
			strings.Contains(reason, "holds none of status.podIPs")) {
		t.Fatalf("tenant pod: %v, want pending with a reason saying the namespace is not proven to be its own", got)
	}
	if !waitRunning(x) {
		t.Fatal("the tenant pod's wait container does not wait any more")
	}
	vNow, err := e.c.Client.CoreV1().Pods(ns).Get(ctx, "victim", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.verifyLive(t, vNow)
	t.Logf("tenant pod reason: %s", reason)
}

// liveRules returns the iptables-save output of the pod's namespace, both families.
func (e *environment) liveRules(t testing.TB, p *corev1.Pod) string {
	t.Helper()
	h, err := e.kl.OpenNetns(p.UID)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	live, err := e.applier.Live(context.Background(), h, string(p.UID), []rules.Family{rules.IPv4, rules.IPv6})
	if err != nil {
		t.Fatal(err)
	}
	return stripCounters(live[rules.IPv4]) + stripCounters(live[rules.IPv6])
}

// stripCounters drops iptables-save's comment lines and packet counters, which change with traffic.
func stripCounters(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, ":") {
			if i := strings.LastIndex(l, " ["); i > 0 {
				l = l[:i]
			}
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// forgeIPs sets the pod's status IPs to ip through pods/status, as client.
func forgeIPs(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, ip string) error {
	body, _ := json.Marshal(map[string]any{"status": map[string]any{"podIP": ip, "podIPs": []any{map[string]any{"ip": ip}}}})
	_, err := client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, body, metav1.PatchOptions{}, "status")
	return err
}

// explodingAnnotations is 15.6 KB of annotations whose rules would be 1000 × 1000 (the issue's
// example): 1000 included CIDRs, 1000 (repeated) virtual interfaces.
func explodingAnnotations() map[string]string {
	cidrs := make([]string, 1000)
	for i := range cidrs {
		cidrs[i] = fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
	}
	return map[string]string{
		istioapi.AnnotationIncludeOutboundIPRanges: strings.Join(cidrs, ","),
		istioapi.AnnotationRerouteVirtual:          strings.TrimSuffix(strings.Repeat("eth1,", 1000), ","),
	}
}

// chartMemoryLimit is the chart's memory limit for the controller (values.yaml resources).
const chartMemoryLimit = 128 << 20

// TestTenantExplodingPod: one pod whose annotations would make a million rules, created with 20
// normal pods: it is failed with a reason naming the annotation over its limit, the 20 are
// released, and the controller's peak RSS stays within the chart's memory limit. The delay the
// exploding pod causes the others is measured by BenchmarkExplodingPod.
func TestTenantExplodingPod(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "exploding", nil)
	e.ensureController(t)
	pods := append(e.meshPods(ns, names("normal", 20)),
		harness.MeshPod(ns, "exploding", e.c.NodeName, harness.WithAnnotations(explodingAnnotations())))
	e.createPods(t, pods)
	e.waitPods(t, ns, names("normal", 20), "released", releaseTimeout, released)
	got := e.waitPods(t, ns, []string{"exploding"}, "failed", releaseTimeout, func(p *corev1.Pod) bool {
		return p.Annotations[contract.KeyStatus] == string(contract.StatusFailed)
	})["exploding"]
	reason := got.Annotations[contract.KeyReason]
	if !strings.Contains(reason, istioapi.AnnotationRerouteVirtual) || !strings.Contains(reason, "1000 elements") {
		t.Errorf("exploding pod's reason %q: want it to name %s and its 1000 elements", reason, istioapi.AnnotationRerouteVirtual)
	}
	if released(got) {
		t.Error("the exploding pod was released")
	}
	_, peak, err := e.ctrl.Memory()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("controller peak RSS %.1f MiB (limit %d MiB)", float64(peak)/(1<<20), chartMemoryLimit>>20)
	if peak >= chartMemoryLimit {
		t.Errorf("controller peak RSS %d bytes, above the chart's limit %d", peak, chartMemoryLimit)
	}
}

// BenchmarkExplodingPod creates 20 normal mesh pods alone, then 20 with one exploding pod, and
// reports the p99 latency from a pod's IP being set to the controller's ready annotation arriving
// in both rounds, and the difference (the delay the exploding pod causes; the target is under
// 100 ms).
//
//	E2E=1 go test -run '^$' -bench ExplodingPod -benchtime 3x ./test/e2e/
func BenchmarkExplodingPod(b *testing.B) {
	e := setup(b)
	e.ensureController(b)
	var base, with []time.Duration
	round := func(i int, exploding bool) []time.Duration {
		ns := e.namespace(b, fmt.Sprintf("explode-%d-%v", i, exploding), nil)
		pods := e.meshPods(ns, names("normal", 20))
		if exploding {
			pods = append(pods, harness.MeshPod(ns, "exploding", e.c.NodeName, harness.WithAnnotations(explodingAnnotations())))
		}
		created := e.createPods(b, pods)
		e.waitPods(b, ns, names("normal", 20), "released", releaseTimeout, released)
		var out []time.Duration
		for _, p := range created {
			if p.Name == "exploding" {
				continue
			}
			tl, ok := e.kl.Timeline(p.UID)
			if !ok || tl.Annotated.IsZero() {
				b.Fatalf("pod %s: incomplete timeline %+v", p.Name, tl)
			}
			out = append(out, max(0, tl.Annotated.Sub(tl.IPPublished)))
		}
		e.deletePods(b, ns)
		return out
	}
	b.ResetTimer()
	for i := range b.N {
		base = append(base, round(i, false)...)
		with = append(with, round(i, true)...)
	}
	b.StopTimer()
	p99 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[(len(d)*99-1)/100].Microseconds()) / 1000
	}
	pb, pw := p99(base), p99(with)
	b.ReportMetric(pb, "p99-ms-without")
	b.ReportMetric(pw, "p99-ms-with-exploding")
	b.ReportMetric(pw-pb, "p99-delay-ms")
	if _, peak, err := e.ctrl.Memory(); err == nil {
		b.ReportMetric(float64(peak)/(1<<20), "controller-peak-RSS-MiB")
	}
}

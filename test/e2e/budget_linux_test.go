package e2e_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// Reports per pod the controller may send at once, and the pace after (controller/budget.go).
const (
	podReportBurst = 5
	podReportEvery = 12 * time.Second
)

// TestFlippingPodReportBudget: a pod whose annotations flip 100 times between invalid values, on
// the simulated node with the real controller, costs the controller at most the per-pod report
// budget of pods/status patches and Events (counted in the API server's audit log of the
// controller's requests), is never released, and once the budget refills its annotation reports
// the latest value.
func TestFlippingPodReportBudget(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "budget", nil)
	e.ensureController(t)
	ctx := context.Background()
	e.createPods(t, []*corev1.Pod{harness.MeshPod(ns, "flipper", e.c.NodeName,
		harness.WithAnnotations(map[string]string{istioapi.AnnotationExcludeInboundPorts: "80,"}))})
	e.waitPods(t, ns, []string{"flipper"}, "failed", releaseTimeout, func(p *corev1.Pod) bool {
		return p.Annotations[contract.KeyStatus] == string(contract.StatusFailed)
	})

	const flips = 100
	start := time.Now()
	latest := ""
	for i := range flips {
		latest = "x" + strconv.Itoa(i) // each an invalid value with a reason of its own
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{istioapi.AnnotationExcludeInboundPorts: latest}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.c.Client.CoreV1().Pods(ns).Patch(ctx, "flipper", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("flip %d: %v", i, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	flipping := time.Since(start)

	// Once the budget refills, the latest value is reported (the deferred report was requeued).
	got := e.waitPods(t, ns, []string{"flipper"}, "reporting the latest value", podReportEvery+30*time.Second, func(p *corev1.Pod) bool {
		return strings.Contains(p.Annotations[contract.KeyReason], strconv.Quote(latest))
	})["flipper"]
	if released(got) || got.Annotations[contract.KeyStatus] != string(contract.StatusFailed) {
		t.Errorf("flipper: status %q, released %v; want failed, never released", got.Annotations[contract.KeyStatus], released(got))
	}
	elapsed := time.Since(start)
	counts, err := auditCounts(e.auditLog, ns)
	if err != nil {
		t.Fatal(err)
	}
	patches, events := counts["patch pods/status"], counts["create events"]+counts["patch events"]
	// The first refusal, then the budget over the whole time since the flips began.
	bound := 1 + podReportBurst + int(elapsed/podReportEvery) + 1
	t.Logf("%d flips in %v, latest reported after %v: %d pods/status patches, %d Event writes by the controller (bound %d); audit %v",
		flips, flipping.Round(time.Millisecond), elapsed.Round(time.Millisecond), patches, events, bound, counts)
	if patches > bound || events > bound {
		t.Errorf("%d pods/status patches and %d Event writes for %d flips in %v, want at most %d each", patches, events, flips, elapsed, bound)
	}
	if patches < 2 {
		t.Errorf("%d pods/status patches: want the first refusal and the latest value reported", patches)
	}
}

package controller

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

// TestFlippingPodSpendsBoundedReports: a pod whose annotations flip 100 times in a minute between
// two refused values costs at most podReportBurst + one per podReportEvery patches and Events in that
// minute; the reports held back are counted, the pod is never programmed, and once the budget has
// room again the annotation says the latest reason.
func TestFlippingPodSpendsBoundedReports(t *testing.T) {
	pod := meshPod("flipper", "10.1.0.5", annotate(istioapi.AnnotationExcludeInboundPorts, "80,"))
	f := newSandboxed(t, pod)
	const flips, step = 100, 600 * time.Millisecond // one minute
	values := []string{"x", "80,"}
	start := f.clock
	patches, events := 0, 0
	for i := range flips {
		if i > 0 {
			f.update(pod, annotate(istioapi.AnnotationExcludeInboundPorts, values[i%2]))
		}
		if err := f.sync(pod); err != nil {
			t.Fatalf("flip %d: %v", i, err)
		}
		patches += len(f.takePatches())
		events += len(f.takeEvents())
		f.clock = f.clock.Add(step)
	}
	minute := f.clock.Sub(start)
	bound := podReportBurst + int(minute/podReportEvery)
	t.Logf("%d flips in %v: %d patches, %d Events (bound %d)", flips, minute, patches, events, bound)
	if patches > bound || events > bound {
		t.Fatalf("%d patches and %d Events for %d flips in %v, want at most %d of each", patches, events, flips, minute, bound)
	}
	if patches < podReportBurst {
		t.Fatalf("%d patches: the first %d refusals must be reported at once", patches, podReportBurst)
	}
	// A flip back to the value the annotation already reports needs no report: not every flip
	// past the budget is a deferral.
	if got := metricValue(t, f.c.metrics.ReportsDeferred); got < float64(flips/2-patches) || got > float64(flips-patches) {
		t.Fatalf("reports_deferred_total = %v, want %d to %d", got, flips/2-patches, flips-patches)
	}
	if f.finder.finds != 0 || len(f.applier.takeCalls()) != 0 {
		t.Fatal("a refused pod's namespace was touched")
	}

	// Flips at one instant until one is deferred (at most the tokens left); once the budget
	// refills, that latest value is reported.
	latest := ""
	for i := 0; latest == ""; i++ {
		if i > podReportBurst {
			t.Fatalf("%d flips at one instant all reported", i)
		}
		v := strconv.Itoa(70000 + i)
		f.update(pod, annotate(istioapi.AnnotationExcludeInboundPorts, v))
		f.mustSync(pod)
		if len(f.takePatches()) == 0 {
			latest = v
		}
	}
	f.clock = f.clock.Add(podReportEvery)
	f.mustSync(pod)
	got := f.takePatches()
	if len(got) != 1 || !strings.Contains(got[0].data, `"failed"`) || !strings.Contains(got[0].data, latest) {
		t.Fatalf("after the budget refilled: patches %+v, want one marking the pod failed for %s", got, latest)
	}
}

// TestNodeReportBudget: many pods refused at once share the node's budget: at most nodeReportBurst
// reports at an instant and one per nodeReportEvery after, and the per-pod buckets kept are bounded.
func TestNodeReportBudget(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b := newReportBudget(now)
	uid := func(i int) types.UID { return types.UID(fmt.Sprintf("pod-%d", i)) }
	allowed := 0
	for i := range 1000 {
		if ok, wait := b.allow(uid(i), now); ok {
			allowed++
		} else if wait <= 0 || wait > nodeReportEvery {
			t.Fatalf("refused with retry after %v, want (0, %v]", wait, nodeReportEvery)
		}
	}
	if allowed != nodeReportBurst {
		t.Fatalf("%d of 1000 pods reported at one instant, want the node burst %d", allowed, nodeReportBurst)
	}
	// Then a minute of new pods, 20 every 100 ms.
	allowed, n := 0, 1000
	for step := range 600 {
		at := now.Add(time.Duration(step+1) * 100 * time.Millisecond)
		for range 20 {
			if ok, _ := b.allow(uid(n), at); ok {
				allowed++
			}
			n++
		}
	}
	if want := int(time.Minute / nodeReportEvery); allowed > want+1 {
		t.Fatalf("%d reports in the following minute, want at most %d", allowed, want)
	}
	if len(b.pods) > maxBudgetedPods {
		t.Fatalf("%d per-pod budgets kept for %d pods, want at most %d", len(b.pods), n, maxBudgetedPods)
	}
}

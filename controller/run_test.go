package controller

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// eventually polls cond until it holds (no timing is asserted: the deadline only bounds a hang).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, what, cond)
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

// TestRunLifecycle runs the controller over a started informer: not ready before the cache syncs,
// local pods reconciled at start-up, new pods programmed by the workers, and on cancellation the
// operation in flight finishes (its patch is sent) before Run returns.
func TestRunLifecycle(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	existing := meshPod("existing", "10.1.0.5")
	client := fake.NewClientset(existing)
	factory := informers.NewSharedInformerFactory(client, 0)
	finder, applier := newFakeFinder(), newFakeApplier()
	finder.sandbox(string(existing.UID), 4097, "10.1.0.5")
	c, err := New(Options{
		NodeName: testNode, Workers: 2, Client: client, Pods: factory.Core().V1().Pods(), Finder: finder, Applier: applier,
		Recorder: record.NewFakeRecorder(100), OpenNamespaces: func() int64 { return 0 },
	})
	if err != nil {
		t.Fatal(err)
	}
	health := HealthHandler(c.Ready)
	if code, _ := get(t, health, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before start: %d", code)
	}
	if code, body := get(t, health, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	factory.Start(runCtx.Done())
	defer factory.Shutdown()
	go func() { done <- c.Run(runCtx) }()

	eventually(t, "ready", c.Ready)
	if code, _ := get(t, health, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz after sync: %d", code)
	}
	status := func(name string) string {
		p, err := client.CoreV1().Pods(testNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		return p.Annotations[contract.KeyStatus]
	}
	eventually(t, "existing pod programmed at start-up", func() bool { return status("existing") == "ready" })

	// A new pod arrives; its apply is in flight when the controller is told to stop.
	applier.entered, applier.release = make(chan struct{}), make(chan struct{})
	late := meshPod("late", "10.1.0.6")
	finder.sandbox(string(late.UID), 4098, "10.1.0.6")
	if _, err := client.CoreV1().Pods(testNS).Create(ctx, late, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	<-applier.entered
	cancel()
	eventually(t, "not ready while draining", func() bool { return !c.Ready() })
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) with an operation in flight", err)
	default:
	}
	close(applier.release)
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := status("late"); got != "ready" {
		t.Fatalf("in-flight pod after drain: status %q, want ready", got)
	}
}

func TestMetricsExposed(t *testing.T) {
	f := newFixture(t, meshPod("web", "10.1.0.5"))
	srv := promhttp.HandlerFor(f.c.metrics.Registry, promhttp.HandlerOpts{})
	code, body := get(t, srv, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, series := range []string{
		"istio_pod_network_controller_setup_latency_seconds_bucket",
		"istio_pod_network_controller_apply_duration_seconds_bucket",
		"istio_pod_network_controller_verify_duration_seconds_bucket",
		"istio_pod_network_controller_discovery_duration_seconds_bucket",
		`istio_pod_network_controller_pods_configured_total{result="ready"} 0`,
		`istio_pod_network_controller_pods_configured_total{result="failed"} 0`,
		`istio_pod_network_controller_errors_total{reason="namespace_not_found"} 0`,
		"istio_pod_network_controller_drift_repairs_total 0",
		"istio_pod_network_controller_spec_changes_total 0",
		`istio_pod_network_controller_workqueue_depth{name="pods"} 0`,
		`istio_pod_network_controller_workqueue_adds_total{name="pods"}`,
		`istio_pod_network_controller_workqueue_work_duration_seconds_bucket{name="pods"`,
		"istio_pod_network_controller_netns_open_fds 0",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(body, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}

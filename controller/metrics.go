package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const metricsNamespace = "istio_pod_network_controller"

// Result label values of pods_configured_total.
const (
	resultReady  = "ready"
	resultFailed = "failed"
)

// Metrics are the controller's Prometheus series, in their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	// SetupLatency: pod seen with an IP -> ready annotation patched.
	SetupLatency prometheus.Histogram
	// ApplyDuration, VerifyDuration, DiscoveryDuration: one Apply, Verify or Find.
	ApplyDuration     prometheus.Histogram
	VerifyDuration    prometheus.Histogram
	DiscoveryDuration prometheus.Histogram
	// PodsConfigured counts pods patched ready or failed, by result.
	PodsConfigured *prometheus.CounterVec
	// Errors counts failed operations and refused pods, by reason (see the reason* constants).
	Errors *prometheus.CounterVec
	// DriftRepairs counts released pods whose rules were restored.
	DriftRepairs prometheus.Counter
	// SpecChanges counts released pods whose traffic configuration was edited afterwards.
	SpecChanges prometheus.Counter
	// ReportsDeferred counts refusal and problem reports held back by the report budget.
	ReportsDeferred prometheus.Counter

	queue *queueMetrics // client-go's workqueue series, for the controller's queue
}

// NewMetrics creates the series and registers them, with the Go and process collectors, in a new
// registry.
func NewMetrics() *Metrics {
	// Buckets from 1 ms to about 33 s: an apply takes ~15 ms, setup ~0.1-1 s, discovery by /proc
	// scan on a busy node can take seconds.
	buckets := prometheus.ExponentialBuckets(0.001, 2, 16)
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		SetupLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "setup_latency_seconds", Buckets: buckets,
			Help: "Time from the controller seeing a pod with an IP to its ready annotation being patched.",
		}),
		ApplyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "apply_duration_seconds", Buckets: buckets,
			Help: "Duration of one apply (probe, restore, read-back, routes) in a pod's namespace.",
		}),
		VerifyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "verify_duration_seconds", Buckets: buckets,
			Help: "Duration of one verification of a released pod's live rules.",
		}),
		DiscoveryDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "discovery_duration_seconds", Buckets: buckets,
			Help: "Duration of finding a pod's network namespace (cache hits included).",
		}),
		PodsConfigured: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "pods_configured_total",
			Help: "Pods annotated ready (programmed) or failed (refused), by result.",
		}, []string{"result"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "errors_total",
			Help: "Failed operations and refused pods, by reason.",
		}, []string{"reason"}),
		DriftRepairs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "drift_repairs_total",
			Help: "Released pods whose live rules had drifted and were restored.",
		}),
		SpecChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "spec_changes_total",
			Help: "Released pods whose traffic configuration changed after release (not applied).",
		}),
		ReportsDeferred: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "reports_deferred_total",
			Help: "Refusals and problems whose pods/status patch and Event were deferred by the per-pod or per-node report budget.",
		}),
	}
	m.Registry.MustRegister(m.SetupLatency, m.ApplyDuration, m.VerifyDuration, m.DiscoveryDuration,
		m.PodsConfigured, m.Errors, m.DriftRepairs, m.SpecChanges, m.ReportsDeferred,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.queue = newQueueMetrics(m.Registry)
	for _, r := range []string{resultReady, resultFailed} {
		m.PodsConfigured.WithLabelValues(r)
	}
	for _, r := range errorReasons {
		m.Errors.WithLabelValues(r)
	}
	return m
}

// gauge registers a gauge read from fn at scrape time.
func (m *Metrics) gauge(name, help string, fn func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Name: name, Help: help,
	}, fn))
}

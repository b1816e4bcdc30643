package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
)

// queueMetrics is client-go's workqueue.MetricsProvider on the controller's own registry: the
// standard workqueue series (depth, adds, queue latency, work duration, unfinished work, longest
// running processor, retries), labelled with the queue's name, as controller-runtime exposes them.
type queueMetrics struct {
	depth                   *prometheus.GaugeVec
	adds, retries           *prometheus.CounterVec
	latency, workDuration   *prometheus.HistogramVec
	unfinished, longestWork *prometheus.GaugeVec
}

var _ workqueue.MetricsProvider = (*queueMetrics)(nil)

func newQueueMetrics(reg prometheus.Registerer) *queueMetrics {
	name := []string{"name"}
	// Queue latency and work duration: microseconds to minutes.
	buckets := prometheus.ExponentialBuckets(10e-6, 10, 8)
	sub := func(n string) prometheus.Opts {
		return prometheus.Opts{Namespace: metricsNamespace, Subsystem: "workqueue", Name: n}
	}
	gauge := func(n, help string) *prometheus.GaugeVec {
		o := sub(n)
		o.Help = help
		return prometheus.NewGaugeVec(prometheus.GaugeOpts(o), name)
	}
	counter := func(n, help string) *prometheus.CounterVec {
		o := sub(n)
		o.Help = help
		return prometheus.NewCounterVec(prometheus.CounterOpts(o), name)
	}
	histogram := func(n, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: metricsNamespace,
			Subsystem: "workqueue", Name: n, Help: help, Buckets: buckets}, name)
	}
	m := &queueMetrics{
		depth:        gauge("depth", "Pods waiting in the work queue."),
		adds:         counter("adds_total", "Adds to the work queue."),
		retries:      counter("retries_total", "Rate-limited re-adds to the work queue (retries)."),
		latency:      histogram("queue_duration_seconds", "Time a pod waits in the work queue before a worker takes it."),
		workDuration: histogram("work_duration_seconds", "Time a worker spends on one pod."),
		unfinished:   gauge("unfinished_work_seconds", "Seconds of work in progress not yet observed by work_duration (large values: a stuck worker)."),
		longestWork:  gauge("longest_running_processor_seconds", "Seconds the longest-running worker has spent on its pod."),
	}
	reg.MustRegister(m.depth, m.adds, m.retries, m.latency, m.workDuration, m.unfinished, m.longestWork)
	return m
}

func (m *queueMetrics) NewDepthMetric(n string) workqueue.GaugeMetric {
	return m.depth.WithLabelValues(n)
}
func (m *queueMetrics) NewAddsMetric(n string) workqueue.CounterMetric {
	return m.adds.WithLabelValues(n)
}
func (m *queueMetrics) NewLatencyMetric(n string) workqueue.HistogramMetric {
	return m.latency.WithLabelValues(n)
}
func (m *queueMetrics) NewWorkDurationMetric(n string) workqueue.HistogramMetric {
	return m.workDuration.WithLabelValues(n)
}
func (m *queueMetrics) NewUnfinishedWorkSecondsMetric(n string) workqueue.SettableGaugeMetric {
	return m.unfinished.WithLabelValues(n)
}
func (m *queueMetrics) NewLongestRunningProcessorSecondsMetric(n string) workqueue.SettableGaugeMetric {
	return m.longestWork.WithLabelValues(n)
}
func (m *queueMetrics) NewRetriesMetric(n string) workqueue.CounterMetric {
	return m.retries.WithLabelValues(n)
}

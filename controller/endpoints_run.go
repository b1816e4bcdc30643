package controller

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

// Reviews of metrics requests use a client of their own, rate-limited apart from the controller's:
// requests with random tokens cannot spend the API budget the pods need.
const (
	reviewQPS   = 5
	reviewBurst = 10
)

// StartEndpoints serves /metrics (over TLS with token authentication and authorization, unless
// cfg.Endpoints.MetricsSecure is false) and /healthz, /readyz on their addresses.
func StartEndpoints(ctx context.Context, cfg Config, restCfg *rest.Config, metrics *Metrics, ready func() bool) (*Servers, error) {
	metricsEP := Endpoint{Name: "metrics", Address: cfg.MetricsAddress, Handler: MetricsHandler(metrics)}
	if cfg.Endpoints.MetricsSecure {
		reviewCfg := rest.CopyConfig(restCfg)
		reviewCfg.QPS, reviewCfg.Burst = reviewQPS, reviewBurst
		reviewCfg.UserAgent = Component + "/metrics-auth"
		reviews, err := kubernetes.NewForConfig(reviewCfg)
		if err != nil {
			return nil, fmt.Errorf("metrics endpoint: API client for token reviews: %w", err)
		}
		tlsCfg, err := metricsTLS(klog.FromContext(ctx), cfg.Endpoints.MetricsCertFile, cfg.Endpoints.MetricsKeyFile, cfg.NodeName)
		if err != nil {
			return nil, err
		}
		metricsEP.Handler = NewTokenAuth(reviews, nil).Wrap(metricsEP.Handler)
		metricsEP.TLS = tlsCfg
	}
	return Serve(ctx, DefaultServerLimits(), metricsEP,
		Endpoint{Name: "health", Address: cfg.HealthAddress, Handler: HealthHandler(ready)})
}

// MetricsHandler serves the registry at /metrics and nothing else; at most two scrapes gather at
// once (a third gets 503).
func MetricsHandler(m *Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{MaxRequestsInFlight: 2}))
	return mux
}

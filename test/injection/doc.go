// Package injection tests the chart's Istio injection template with Istio's own sidecar injector
// (istio.io/istio/pkg/kube/inject, served over HTTP as istiod serves it) configured by the istiod
// chart rendered with the chart's istiod-values.yaml. It is a module of its own so the main module
// does not depend on Istio. The injected pods it writes to testdata/injected-*.yaml are checked by
// the main module's test/chart tests against a real API server enforcing Pod Security "restricted".
package injection

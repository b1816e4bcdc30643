// Package chart holds the tests of the Helm chart in charts/istio-pod-network-controller, run with
// the real helm binary (built from its Go module by test/tools/build.sh and cached): lint, rendering
// compared with golden files (refresh with `go test ./test/chart -update` or REFRESH_GOLDEN=true),
// the chart's arguments checked against the controller's flags, and, on the local control plane of
// test/e2e/cluster (E2E=1, or CI), the manifests installed, the admission policies enforced, and the
// pods Istio's injector makes with the chart's template (test/injection) admitted under Pod Security
// "restricted".
package chart

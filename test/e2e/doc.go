// Package e2e holds the end-to-end scenarios and their benchmarks: the real controller binary, the
// real wait binary, the chart's RBAC and admission policies, a real kube-apiserver and etcd, and a
// simulated node on real network namespaces (see package kubelet). The tests are Linux only, need
// root, and run when E2E or CI is set (see docs/e2e.md).
package e2e

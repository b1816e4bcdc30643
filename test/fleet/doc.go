// Package fleet measures what a fleet of node controllers costs one API server: N real controller
// processes (the built binary, one per Node object, each with a ServiceAccount token bound to its
// own controller Pod object) against the local control plane of test/e2e/cluster, with 110 pods per
// node as API objects. Nothing is programmed: without a sandbox a pod has no IP and stays pending,
// so what is measured is the watch load of the fleet.
//
// BenchmarkFleet reports, per N, the API server's resident set and CPU time (from /proc), its
// request rate (apiserver_request_total deltas), its open pod watches, and the controllers' resident
// sets, at steady state and during pod churn; then it restarts the API server and reports how long
// until every controller's pod watch is open again (from the API server's audit log, one entry per
// request, the controller known by the node name in its token) and the requests per second the
// fleet sends meanwhile. With -fleet.doc it writes the tables into docs/fleet.md and the picture
// docs/fleet.svg. See docs/fleet.md for the command and the figures.
package fleet

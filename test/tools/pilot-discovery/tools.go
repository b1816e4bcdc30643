//go:build tools

// Package tools pins istio.io/istio so `go build istio.io/istio/pilot/cmd/pilot-discovery` resolves
// from this module.
package tools

import _ "istio.io/istio/pilot/cmd/pilot-discovery"

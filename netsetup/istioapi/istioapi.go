// Package istioapi names the parts of Istio's own API that this project reads: the pod annotations
// that shape the redirect rules. Istio declares them and users set them; the controller and the wait
// binary only read them. (The project's own annotations are in package contract.)
package istioapi

// Istio annotations that shape the rules.
const (
	AnnotationInterceptionMode        = "sidecar.istio.io/interceptionMode"
	AnnotationIncludeOutboundIPRanges = "traffic.sidecar.istio.io/includeOutboundIPRanges"
	AnnotationExcludeOutboundIPRanges = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
	AnnotationIncludeInboundPorts     = "traffic.sidecar.istio.io/includeInboundPorts"
	AnnotationExcludeInboundPorts     = "traffic.sidecar.istio.io/excludeInboundPorts"
	AnnotationIncludeOutboundPorts    = "traffic.sidecar.istio.io/includeOutboundPorts"
	AnnotationExcludeOutboundPorts    = "traffic.sidecar.istio.io/excludeOutboundPorts"
	AnnotationExcludeInterfaces       = "traffic.sidecar.istio.io/excludeInterfaces"
	AnnotationRerouteVirtual          = "istio.io/reroute-virtual-interfaces"
	AnnotationKubevirtInterfaces      = "traffic.sidecar.istio.io/kubevirtInterfaces" // deprecated
)

// Annotations lists every Istio annotation podconfig.FromPod reads: a change to any of them changes the rules.
var Annotations = []string{
	AnnotationInterceptionMode, AnnotationIncludeOutboundIPRanges, AnnotationExcludeOutboundIPRanges,
	AnnotationIncludeInboundPorts, AnnotationExcludeInboundPorts, AnnotationIncludeOutboundPorts,
	AnnotationExcludeOutboundPorts, AnnotationExcludeInterfaces, AnnotationRerouteVirtual,
	AnnotationKubevirtInterfaces,
}

// InterceptionNone is the AnnotationInterceptionMode value for no capture (no rules, so no
// self-test in the wait container).
const InterceptionNone = "NONE"

package podconfig

import (
	"errors"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

// MaxValueBytes bounds each annotation FromPod reads, checked before the value is split: a list at
// its element limit fits with room to spare (1024 IPv6 CIDRs of the longest form, 43 characters and
// a comma each, take 44 KiB). The API server admits 256 KiB of annotations in total.
const MaxValueBytes = 64 << 10

// checkSizes refuses an annotation FromPod reads that is longer than MaxValueBytes.
func checkSizes(ann map[string]string) error {
	for _, key := range istioapi.Annotations {
		if v := ann[key]; len(v) > MaxValueBytes {
			return &rules.LimitError{Field: key, Count: len(v), Limit: MaxValueBytes, Unit: "bytes"}
		}
	}
	return nil
}

// elements counts the elements of a comma-separated list without splitting it (linear, no
// allocation): "" and spaces are no element, "*" counts as one.
func elements(v string) int {
	if strings.TrimSpace(v) == "" {
		return 0
	}
	return strings.Count(v, ",") + 1
}

// withinLimit records a *rules.LimitError when the list v of key has more than limit elements,
// and reports whether it may be parsed (within the limit and no earlier error).
func (p *parser) withinLimit(key, v string, limit int) bool {
	if p.err != nil {
		return false
	}
	if n := elements(v); n > limit {
		p.err = &rules.LimitError{Field: key, Count: n, Limit: limit, Unit: "elements"}
		return false
	}
	return true
}

// dedup drops repeated elements in place, keeping the first of each in order, in linear time. A
// repeated element would only repeat a rule that can never match (the first copy decides), so the
// rules of a list without repeats, what Istio's goldens use, are unchanged.
func dedup[T comparable](list []T) []T {
	if len(list) < 2 {
		return list
	}
	seen := make(map[T]struct{}, len(list))
	out := list[:0]
	for _, el := range list {
		if _, ok := seen[el]; !ok {
			seen[el] = struct{}{}
			out = append(out, el)
		}
	}
	return out
}

// checkTotal refuses cfg when it is over the rules package's limits (in practice the rule total:
// the lists were bounded while parsing), naming the annotations and fields the lists came from.
func (p *parser) checkTotal(cfg *rules.Config, proxyField, rerouteKey string) {
	if p.err != nil {
		return
	}
	err := rules.CheckLimits(cfg)
	var le *rules.LimitError
	if !errors.As(err, &le) {
		p.err = err
		return
	}
	source := map[string]string{
		"OutboundIPRangesInclude":  istioapi.AnnotationIncludeOutboundIPRanges,
		"OutboundIPRangesExclude":  istioapi.AnnotationExcludeOutboundIPRanges,
		"InboundPortsInclude":      istioapi.AnnotationIncludeInboundPorts,
		"InboundPortsExclude":      istioapi.AnnotationExcludeInboundPorts,
		"OutboundPortsInclude":     istioapi.AnnotationIncludeOutboundPorts,
		"OutboundPortsExclude":     istioapi.AnnotationExcludeOutboundPorts,
		"ExcludeInterfaces":        istioapi.AnnotationExcludeInterfaces,
		"RerouteVirtualInterfaces": rerouteKey,
		"ProxyUIDs":                proxyField + ".securityContext.runAsUser",
		"ProxyGIDs":                proxyField + ".securityContext.runAsGroup",
	}
	le.Rename(func(field string) string {
		if s, ok := source[field]; ok {
			return s
		}
		return field
	})
	p.err = le
}

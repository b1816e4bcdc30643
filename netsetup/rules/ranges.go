package rules

import "net/netip"

// splitRanges separates prefixes by family, rendered as Istio renders them (netip.Prefix.String).
func splitRanges(prefixes []netip.Prefix) (v4, v6 []string) {
	for _, p := range prefixes {
		if p.Addr().Is4() {
			v4 = append(v4, p.String())
		} else {
			v6 = append(v6, p.String())
		}
	}
	return v4, v6
}

// hasLoopback reports whether an explicitly included range is a loopback address, in which case
// Istio keeps app-to-self traffic on lo captured.
func hasLoopback(prefixes []netip.Prefix) bool {
	for _, p := range prefixes {
		if p.Addr().IsLoopback() {
			return true
		}
	}
	return false
}

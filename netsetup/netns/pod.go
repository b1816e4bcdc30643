package netns

import (
	"fmt"
	"net/netip"
	"slices"
)

// validatePod checks Find's arguments and normalizes the IPs (unmapped, deduplicated).
func validatePod(podUID string, podIPs []netip.Addr) ([]netip.Addr, error) {
	if err := validUID(podUID); err != nil {
		return nil, err
	}
	if len(podIPs) == 0 {
		return nil, fmt.Errorf("pod UID %q: no pod IPs given", podUID)
	}
	out := make([]netip.Addr, 0, len(podIPs))
	for i, ip := range podIPs {
		if !ip.IsValid() || ip.IsUnspecified() {
			return nil, fmt.Errorf("pod UID %q: pod IP #%d %q is not a usable address", podUID, i, ip.String())
		}
		ip = ip.Unmap().WithZone("")
		if !containsAddr(out, ip) {
			out = append(out, ip)
		}
	}
	return out, nil
}

// validUID accepts what the kubelet puts in cgroup paths: API UIDs (UUIDs) and static pods' config
// hashes (32 hex digits): hex digits and hyphens, at most 64 characters.
func validUID(uid string) error {
	if uid == "" || len(uid) > 64 {
		return fmt.Errorf("pod UID %q: want 1 to 64 hex digits and hyphens", uid)
	}
	for _, r := range uid {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F' || r == '-') {
			return fmt.Errorf("pod UID %q: character %q: want hex digits and hyphens", uid, string(r))
		}
	}
	return nil
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// sameAddrSet reports whether a and b hold the same addresses, ignoring order.
func sameAddrSet(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !containsAddr(b, x) {
			return false
		}
	}
	return true
}

// sortedKeys returns m's keys in order (for stable messages).
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// podAddrs keeps the addresses a CNI assigns a pod: not loopback, link-local or multicast.
func podAddrs(all []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range all {
		if a.IsValid() && !a.IsLoopback() && !a.IsLinkLocalUnicast() && !a.IsMulticast() && !a.IsUnspecified() {
			out = append(out, a.Unmap())
		}
	}
	return out
}

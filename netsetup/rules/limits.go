package rules

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Limits on a configuration, far above what a real one needs (docs/netsetup.md, "Limits"). The
// number of rules is a product of lists (every included CIDR is repeated for every virtual
// interface), so each list is bounded and so is the total, which Count computes from the list
// lengths before anything is generated.
const (
	// MaxCIDRs bounds each CIDR list (outbound include and exclude).
	MaxCIDRs = 1024
	// MaxPorts bounds each port list (inbound include and exclude, outbound include and exclude).
	MaxPorts = 1024
	// MaxInterfaces bounds each interface list (excluded, rerouted virtual interfaces).
	MaxInterfaces = 32
	// MaxIDs bounds the proxy UID and GID lists, the owner groups and each DNS server list.
	MaxIDs = 64
	// MaxRules bounds the rules of each address family.
	MaxRules = 8192
)

// ErrInvalid marks a configuration that is refused until it changes (the pod's is `failed`).
// podconfig.ErrInvalid is this error. Test with errors.Is.
var ErrInvalid = errors.New("invalid pod configuration")

// ErrTooLarge marks a configuration over one of the limits; it is also ErrInvalid.
var ErrTooLarge = errors.New("configuration over a size limit")

// LimitError is a configuration over a limit: a list with too many elements (or, for a pod, an
// annotation with too many bytes), or too many rules in total. Field names the list (a Config
// field here; podconfig renames it to the annotation); for a rule total, Field is "rules" and
// Lists names the largest lists it grows with.
type LimitError struct {
	Field string
	Count int
	Limit int
	Unit  string // "elements", "bytes", "IPv4 rules" or "IPv6 rules"
	Lists []ListSize
}

// ListSize is one list of a configuration and its number of elements.
type ListSize struct {
	Field string
	Count int
}

func (e *LimitError) Error() string {
	if len(e.Lists) == 0 {
		return fmt.Sprintf("%s: %d %s, more than the limit of %d", e.Field, e.Count, e.Unit, e.Limit)
	}
	parts := make([]string, len(e.Lists))
	for i, l := range e.Lists {
		parts[i] = fmt.Sprintf("%s has %d elements", l.Field, l.Count)
	}
	return fmt.Sprintf("the configuration would generate %d %s, more than the limit of %d (largest lists: %s)",
		e.Count, e.Unit, e.Limit, strings.Join(parts, ", "))
}

// Is makes every LimitError match ErrTooLarge and ErrInvalid.
func (e *LimitError) Is(target error) bool { return target == ErrTooLarge || target == ErrInvalid }

// Rename replaces the Config field names in e (Field and Lists) by name(field).
func (e *LimitError) Rename(name func(field string) string) {
	e.Field = name(e.Field)
	for i := range e.Lists {
		e.Lists[i].Field = name(e.Lists[i].Field)
	}
}

type listLimit struct {
	ListSize
	limit int
}

func (c *Config) lists() []listLimit {
	l := func(field string, n, limit int) listLimit { return listLimit{ListSize{field, n}, limit} }
	return []listLimit{
		l("OutboundIPRangesInclude", len(c.OutboundIPRangesInclude.Prefixes), MaxCIDRs),
		l("OutboundIPRangesExclude", len(c.OutboundIPRangesExclude), MaxCIDRs),
		l("InboundPortsInclude", len(c.InboundPortsInclude.Ports), MaxPorts),
		l("InboundPortsExclude", len(c.InboundPortsExclude), MaxPorts),
		l("OutboundPortsInclude", len(c.OutboundPortsInclude), MaxPorts),
		l("OutboundPortsExclude", len(c.OutboundPortsExclude), MaxPorts),
		l("ExcludeInterfaces", len(c.ExcludeInterfaces), MaxInterfaces),
		l("RerouteVirtualInterfaces", len(c.RerouteVirtualInterfaces), MaxInterfaces),
		l("ProxyUIDs", len(c.ProxyUIDs), MaxIDs),
		l("ProxyGIDs", len(c.ProxyGIDs), MaxIDs),
		l("OwnerGroups", len(c.OwnerGroups.Groups), MaxIDs),
		l("DNSServersV4", len(c.DNSServersV4), MaxIDs),
		l("DNSServersV6", len(c.DNSServersV6), MaxIDs),
	}
}

// CheckLimits refuses a configuration with a list over its limit or more than MaxRules rules in a
// family, with a *LimitError. It only counts: nothing is generated.
func CheckLimits(c *Config) error {
	lists := c.lists()
	for _, l := range lists {
		if l.Count > l.limit {
			return &LimitError{Field: l.Field, Count: l.Count, Limit: l.limit, Unit: "elements"}
		}
	}
	v4, v6 := Count(c)
	for _, f := range []struct {
		n    int
		unit string
	}{{v4, "IPv4 rules"}, {v6, "IPv6 rules"}} {
		if f.n > MaxRules {
			slices.SortStableFunc(lists, func(a, b listLimit) int { return cmp.Compare(b.Count, a.Count) })
			var largest []ListSize
			for _, l := range lists[:3] {
				if l.Count > 0 {
					largest = append(largest, l.ListSize)
				}
			}
			return &LimitError{Field: "rules", Count: f.n, Limit: MaxRules, Unit: f.unit, Lists: largest}
		}
	}
	return nil
}

package netsetup

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// Istio's sidecar CNI path always uses this TPROXY mark and table; routes of an earlier TPROXY
// configuration are recognized by them and removed when the mode changes.
const (
	defaultTProxyMark  = 1337
	defaultTProxyTable = 133
)

var v6Passthrough = &net.IPNet{IP: net.ParseIP("::6"), Mask: net.CIDRMask(128, 128)}

// syncRoutes makes the calling thread's namespace hold exactly the routes r asks for, through
// netlink, idempotently: ::6/128 on lo with IPv6, and for TPROXY the fwmark rule and the local
// default route on lo in the TPROXY table, per family. With write false it only checks.
func syncRoutes(r rules.Routes, write bool) (bool, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return false, fmt.Errorf("find lo: %w", err)
	}
	changed := false
	if r.LoopbackV6 {
		c, err := ensureAddr(lo, write)
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	mark, table := uint32(defaultTProxyMark), defaultTProxyTable
	if r.TProxy {
		mark, table = r.Mark, r.Table
	}
	families := []int{unix.AF_INET, unix.AF_INET6}
	for _, fam := range families {
		want := r.TProxy && (fam == unix.AF_INET || r.LoopbackV6)
		c, err := syncPolicyRouting(lo, fam, mark, table, want, write)
		if err != nil {
			return changed, err
		}
		changed = changed || c
	}
	return changed, nil
}

func ensureAddr(lo netlink.Link, write bool) (bool, error) {
	addrs, err := netlink.AddrList(lo, unix.AF_INET6)
	if err != nil {
		return false, fmt.Errorf("list lo addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IPNet != nil && a.IPNet.String() == v6Passthrough.String() {
			return false, nil
		}
	}
	if !write {
		return false, fmt.Errorf("%w: ::6/128 missing on lo", ErrDrift)
	}
	if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: v6Passthrough}); err != nil && !errors.Is(err, unix.EEXIST) {
		return false, fmt.Errorf("add ::6/128 to lo: %w", err)
	}
	return true, nil
}

// syncPolicyRouting makes "fwmark mark lookup table" and "local default dev lo table table" present
// (want) or absent in family fam.
func syncPolicyRouting(lo netlink.Link, fam int, mark uint32, table int, want, write bool) (bool, error) {
	name := map[int]string{unix.AF_INET: "IPv4", unix.AF_INET6: "IPv6"}[fam]
	all, err := netlink.RuleList(fam)
	if err != nil {
		return false, fmt.Errorf("list %s rules: %w", name, err)
	}
	var found []netlink.Rule
	for _, r := range all {
		if r.Mark == mark && r.Table == table {
			found = append(found, r)
		}
	}
	routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return false, fmt.Errorf("list %s routes of table %d: %w", name, table, err)
	}
	var local []netlink.Route
	for _, r := range routes {
		if r.Type == unix.RTN_LOCAL && r.LinkIndex == lo.Attrs().Index && (r.Dst == nil || isDefault(r.Dst)) {
			local = append(local, r)
		}
	}
	present := len(found) == 1 && len(local) == 1
	absent := len(found) == 0 && len(local) == 0
	if (want && present) || (!want && absent) {
		return false, nil
	}
	if !write {
		return false, fmt.Errorf("%w: %s TPROXY policy routing (fwmark %d table %d): want present=%t, have %d rule(s), %d route(s)",
			ErrDrift, name, mark, table, want, len(found), len(local))
	}
	for _, r := range found {
		if err := netlink.RuleDel(&r); err != nil {
			return false, fmt.Errorf("delete %s rule fwmark %d: %w", name, mark, err)
		}
	}
	for _, r := range local {
		if err := netlink.RouteDel(&r); err != nil {
			return false, fmt.Errorf("delete %s local route in table %d: %w", name, table, err)
		}
	}
	if !want {
		return true, nil
	}
	rule := netlink.NewRule()
	rule.Family, rule.Table, rule.Mark = fam, table, mark
	if err := netlink.RuleAdd(rule); err != nil {
		return false, fmt.Errorf("add %s rule fwmark %d lookup %d: %w", name, mark, table, err)
	}
	dst := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
	if fam == unix.AF_INET6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	route := &netlink.Route{Dst: dst, Scope: netlink.SCOPE_HOST, Type: unix.RTN_LOCAL, Table: table, LinkIndex: lo.Attrs().Index}
	if err := netlink.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
		return false, fmt.Errorf("add %s local default route in table %d: %w", name, table, err)
	}
	return true, nil
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// SyncRoutes makes the calling thread's namespace hold exactly the routes r asks for (syncRoutes),
// for the other rule backends (package nft).
func SyncRoutes(r rules.Routes, write bool) (bool, error) { return syncRoutes(r, write) }

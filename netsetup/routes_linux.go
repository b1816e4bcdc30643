package netsetup

import (
	nlbin "encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/internal/nlbuf"
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
// default route on lo in the TPROXY table, per family. With write false it only checks. One route
// netlink socket serves it all: both families' rules are one dump; the TPROXY table's routes are
// dumped only for TPROXY or when a TPROXY rule is left to remove (without the rule that sends
// packets to it, a route in that table carries no traffic: a REDIRECT pod needs one dump).
func syncRoutes(r rules.Routes, write bool) (bool, error) {
	if !r.TProxy && !r.LoopbackV6 {
		// The typical pod (REDIRECT, IPv4) needs only the proof that no TPROXY rule is left.
		n, err := countRules(defaultTProxyMark, defaultTProxyTable)
		if err != nil || n == 0 {
			return false, err
		}
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return false, fmt.Errorf("open route netlink: %w", err)
	}
	defer h.Close()
	lo, err := loopback()
	if err != nil {
		return false, err
	}
	changed := false
	if r.LoopbackV6 {
		c, err := ensureAddr(h, lo, write)
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	mark, table := uint32(defaultTProxyMark), defaultTProxyTable
	if r.TProxy {
		mark, table = r.Mark, r.Table
	}
	allRules, err := h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return false, fmt.Errorf("list rules: %w", err)
	}
	var ours []netlink.Rule
	for _, ru := range allRules {
		if ru.Mark == mark && ru.Table == table {
			ours = append(ours, ru)
		}
	}
	var allRoutes []netlink.Route
	if r.TProxy || len(ours) > 0 {
		if allRoutes, err = h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE); err != nil {
			return false, fmt.Errorf("list routes of table %d: %w", table, err)
		}
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		p := policy{h: h, lo: lo, fam: fam, mark: mark, table: table}
		for _, ru := range ours {
			if ru.Family == fam {
				p.rules = append(p.rules, ru)
			}
		}
		for _, rt := range allRoutes {
			if rt.Family == fam && rt.Type == unix.RTN_LOCAL && rt.LinkIndex == lo.Attrs().Index && (rt.Dst == nil || isDefault(rt.Dst)) {
				p.routes = append(p.routes, rt)
			}
		}
		c, err := p.sync(r.TProxy && (fam == unix.AF_INET || r.LoopbackV6), write)
		if err != nil {
			return changed, err
		}
		changed = changed || c
	}
	return changed, nil
}

// loopback returns lo of the calling thread's namespace, its index read with one ioctl (a link
// lookup over netlink returns every attribute and statistic of the link).
func loopback() (netlink.Link, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Index: int(ifr.Uint32())}}, nil
}

func ensureAddr(h *netlink.Handle, lo netlink.Link, write bool) (bool, error) {
	addrs, err := h.AddrList(lo, unix.AF_INET6)
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
	if err := h.AddrAdd(lo, &netlink.Addr{IPNet: v6Passthrough}); err != nil && !errors.Is(err, unix.EEXIST) {
		return false, fmt.Errorf("add ::6/128 to lo: %w", err)
	}
	return true, nil
}

// policy is the TPROXY policy routing of one family as found: the "fwmark mark lookup table"
// rules and the "local default dev lo table table" routes.
type policy struct {
	h      *netlink.Handle
	lo     netlink.Link
	fam    int
	mark   uint32
	table  int
	rules  []netlink.Rule
	routes []netlink.Route
}

// sync makes the rule and the route present (want) or absent.
func (p policy) sync(want, write bool) (bool, error) {
	name := map[int]string{unix.AF_INET: "IPv4", unix.AF_INET6: "IPv6"}[p.fam]
	present := len(p.rules) == 1 && len(p.routes) == 1
	absent := len(p.rules) == 0 // the routes are not dumped then: inert without the rule
	if (want && present) || (!want && absent) {
		return false, nil
	}
	if !write {
		return false, fmt.Errorf("%w: %s TPROXY policy routing (fwmark %d table %d): want present=%t, have %d rule(s), %d route(s)",
			ErrDrift, name, p.mark, p.table, want, len(p.rules), len(p.routes))
	}
	for _, r := range p.rules {
		if err := p.h.RuleDel(&r); err != nil {
			return false, fmt.Errorf("delete %s rule fwmark %d: %w", name, p.mark, err)
		}
	}
	for _, r := range p.routes {
		if err := p.h.RouteDel(&r); err != nil {
			return false, fmt.Errorf("delete %s local route in table %d: %w", name, p.table, err)
		}
	}
	if !want {
		return true, nil
	}
	rule := netlink.NewRule()
	rule.Family, rule.Table, rule.Mark = p.fam, p.table, p.mark
	if err := p.h.RuleAdd(rule); err != nil {
		return false, fmt.Errorf("add %s rule fwmark %d lookup %d: %w", name, p.mark, p.table, err)
	}
	dst := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
	if p.fam == unix.AF_INET6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	route := &netlink.Route{Dst: dst, Scope: netlink.SCOPE_HOST, Type: unix.RTN_LOCAL, Table: p.table, LinkIndex: p.lo.Attrs().Index}
	if err := p.h.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
		return false, fmt.Errorf("add %s local default route in table %d: %w", name, p.table, err)
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

// countRules counts the policy routing rules "fwmark mark lookup table" of both families with one
// rule dump on a plain route netlink socket, used with blocking system calls on the calling
// thread.
func countRules(mark uint32, table int) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return 0, fmt.Errorf("open route netlink: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("bind route netlink: %w", err)
	}
	req := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofRtMsg) // fib_rule_hdr has rtmsg's size; family AF_UNSPEC: all
	nlbin.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	nlbin.NativeEndian.PutUint16(req[4:], unix.RTM_GETRULE)
	nlbin.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	nlbin.NativeEndian.PutUint32(req[8:], 1)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("list rules: %w", err)
	}
	bp := nlbuf.Get()
	defer nlbuf.Put(bp)
	buf := *bp
	count := 0
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("list rules: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return 0, fmt.Errorf("list rules: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return count, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(nlbin.NativeEndian.Uint32(m.Data)); errno != 0 {
						return 0, fmt.Errorf("list rules: %w", unix.Errno(-errno))
					}
				}
			case unix.RTM_NEWRULE:
				if ruleMatches(m.Data, mark, table) {
					count++
				}
			}
		}
	}
}

// ruleMatches reports whether a fib rule message (fib_rule_hdr, then attributes) is
// "fwmark mark lookup table".
func ruleMatches(data []byte, mark uint32, table int) bool {
	if len(data) < unix.SizeofRtMsg {
		return false
	}
	tbl, fwmark, hasMark := int(data[4]), uint32(0), false
	for b := data[unix.SizeofRtMsg:]; len(b) >= unix.SizeofRtAttr; {
		l := int(nlbin.NativeEndian.Uint16(b[0:]))
		if l < unix.SizeofRtAttr || l > len(b) {
			return false
		}
		v := b[unix.SizeofRtAttr:l]
		switch nlbin.NativeEndian.Uint16(b[2:]) {
		case unix.FRA_TABLE:
			if len(v) >= 4 {
				tbl = int(nlbin.NativeEndian.Uint32(v))
			}
		case unix.FRA_FWMARK:
			if len(v) >= 4 {
				fwmark, hasMark = nlbin.NativeEndian.Uint32(v), true
			}
		}
		b = b[min((l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1), len(b)):]
	}
	return hasMark && fwmark == mark && tbl == table
}

package nft

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/internal/procnet"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
)

// iptablesTables are the tables Istio's iptables rules live in.
var iptablesTables = []string{"nat", "mangle", "raw"}

// ForeignRules reports whether ns holds iptables rules that would run alongside ours: legacy
// iptables nat, mangle or raw tables (read from /proc/thread-self/net/ip{,6}_tables_names, which
// never creates a table), or ISTIO_* chains of iptables-nft (ip/ip6 tables, read over netlink).
func (a *Applier) ForeignRules(ctx context.Context, ns netsetup.Namespace, key string) (bool, error) {
	reason, err := a.Foreign(ns)
	return reason != "", err
}

// Foreign is ForeignRules with the reason: "" when there are none.
func (a *Applier) Foreign(ns netsetup.Namespace) (string, error) {
	var reason string
	err := ns.Do(func() error {
		nc, err := dial()
		if err != nil {
			return err
		}
		defer nc.Close()
		reason, err = foreign(nc)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("network namespace %s: %w", ns.Path(), err)
	}
	return reason, nil
}

// foreign looks for iptables rules in the calling thread's namespace, nftables ones on nc.
func foreign(nc *conn) (string, error) {
	var found []string
	for _, f := range []string{procnet.TableNames, procnet.Table6Names} {
		tables, err := procnet.LegacyTables(f, iptablesTables...)
		if err != nil {
			return "", err
		}
		for _, t := range tables {
			found = append(found, "legacy "+strings.TrimSuffix(f, "_tables_names")+" table "+t)
		}
	}
	chains, err := iptablesNftChains(nc)
	if err != nil {
		return "", fmt.Errorf("list chains: %w", err)
	}
	found = append(found, chains...)
	if len(found) == 0 {
		return "", nil
	}
	return "iptables rules would run alongside the nftables rules: " + strings.Join(found, ", "), nil
}

// iptablesNftChains names the ISTIO_* chains of iptables-nft (tables nat, mangle and raw of the ip
// and ip6 families), from one chain dump of every family.
func iptablesNftChains(nc *conn) ([]string, error) {
	replies, err := nc.dumpFamily(unix.NFT_MSG_GETCHAIN, unix.NFPROTO_UNSPEC)
	if err != nil {
		return nil, err
	}
	var found []string
	for _, data := range replies {
		var fam string
		switch data[0] {
		case unix.NFPROTO_IPV4:
			fam = "ip"
		case unix.NFPROTO_IPV6:
			fam = "ip6"
		default:
			continue
		}
		c, err := parseChain(data[4:])
		if err != nil {
			return nil, err
		}
		if slices.Contains(iptablesTables, c.table) && strings.HasPrefix(c.name, "ISTIO_") {
			found = append(found, fmt.Sprintf("iptables-nft chain %s in table %s %s", c.name, fam, c.table))
		}
	}
	return found, nil
}

package nft

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"

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
		var err error
		reason, err = foreign()
		return err
	})
	if err != nil {
		return "", fmt.Errorf("network namespace %s: %w", ns.Path(), err)
	}
	return reason, nil
}

func foreign() (string, error) {
	var found []string
	for _, f := range []string{"ip_tables_names", "ip6_tables_names"} {
		data, err := os.ReadFile("/proc/thread-self/net/" + f)
		if err != nil {
			continue // the legacy module is not loaded: no legacy table anywhere
		}
		for _, t := range strings.Fields(string(data)) {
			if slices.Contains(iptablesTables, t) {
				found = append(found, "legacy "+strings.TrimSuffix(f, "_tables_names")+" table "+t)
			}
		}
	}
	conn, err := nftables.New()
	if err != nil {
		return "", err
	}
	chains, err := conn.ListChains()
	if err != nil {
		return "", fmt.Errorf("list chains: %w", err)
	}
	for _, c := range chains {
		fam := c.Table.Family
		if (fam == nftables.TableFamilyIPv4 || fam == nftables.TableFamilyIPv6) &&
			slices.Contains(iptablesTables, c.Table.Name) && strings.HasPrefix(c.Name, "ISTIO_") {
			name := map[nftables.TableFamily]string{nftables.TableFamilyIPv4: "ip", nftables.TableFamilyIPv6: "ip6"}[fam]
			found = append(found, fmt.Sprintf("iptables-nft chain %s in table %s %s", c.Name, name, c.Table.Name))
		}
	}
	if len(found) == 0 {
		return "", nil
	}
	return "iptables rules would run alongside the nftables rules: " + strings.Join(found, ", "), nil
}

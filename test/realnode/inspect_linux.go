package realnode

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// HostRules is the host network namespace's packet filter state without counters: `nft list
// ruleset` (the nft tables, iptables-nft's included) and iptables-legacy-save for both families.
// Take it after Start (the kubelet and the CNI bridge are up) and compare at the end: the node and
// the controller must leave the host's rules alone.
func HostRules(ctx context.Context) (string, error) {
	var b strings.Builder
	for _, cmd := range [][]string{{"nft", "list", "ruleset"}, {"iptables-legacy-save"}, {"ip6tables-legacy-save"}} {
		out, err := exec.CommandContext(ctx, cmd[0], cmd[1:]...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s: %w: %s", strings.Join(cmd, " "), err, out)
		}
		fmt.Fprintf(&b, "## %s\n", strings.Join(cmd, " "))
		for line := range strings.Lines(string(out)) {
			if !strings.HasPrefix(line, "#") {
				b.WriteString(counters.ReplaceAllString(line, "[-]"))
			}
		}
	}
	return b.String(), nil
}

// counters are iptables-save's [packets:bytes] and nft's "counter packets N bytes M".
var counters = regexp.MustCompile(`\[\d+:\d+\]|packets \d+ bytes \d+`)

// cniRecord is the part of libcni's result cache file (/var/lib/cni/results/<network>-<sandbox
// id>-<ifname>) the node reads.
type cniRecord struct {
	Kind        string     `json:"kind"`
	ContainerID string     `json:"containerId"`
	Netns       string     `json:"netns"`
	IfName      string     `json:"ifName"`
	CNIArgs     [][]string `json:"cniArgs"`
}

// PodNetns returns the network namespace path (/var/run/netns/cni-...) of the pod's current
// sandbox on this node, from the CNI plugin's result cache of the node's network.
func PodNetns(podUID string) (string, error) {
	files, err := filepath.Glob(filepath.Join("/var/lib/cni/results", CNINetwork+"-*-eth0"))
	if err != nil {
		return "", err
	}
	for _, f := range files {
		r, err := readCNIRecord(f)
		if err != nil {
			continue
		}
		for _, kv := range r.CNIArgs {
			if len(kv) == 2 && kv[0] == "K8S_POD_UID" && kv[1] == podUID {
				return r.Netns, nil
			}
		}
	}
	return "", fmt.Errorf("no CNI result record of network %s for pod UID %s", CNINetwork, podUID)
}

package kubelet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
)

// The CNI result cache: after CNI ADD, containerd's and CRI-O's libcni write one record per
// sandbox, network and interface to <cache dir>/results/<network>-<sandbox ID>-<ifname> (root,
// mode 0600, written in place), holding the sandbox ID, the netns path it gave the plugins, the
// CNI arguments (K8S_POD_UID among them) and the result (the IPs); CNI DEL removes it. The
// simulator writes the same records under its node root, so that the controller's cni-cache
// discovery and its local watch of that directory see what they see on a real node.

// cniNetwork is the simulated node's network name (the bridge plugin's conflist name).
const cniNetwork = "e2e-bridge"

// CNIResultsDir is the simulator's libcni result cache (the controller's --cni-results-dir).
func (k *Kubelet) CNIResultsDir() string { return filepath.Join(k.stateDir, "cni", "results") }

func cniRecordPath(dir, sandboxID string) string {
	return filepath.Join(dir, cniNetwork+"-"+sandboxID+"-eth0")
}

// cniRecordJSON is libcni's cacheV1 record (libcni's field names and order).
type cniRecordJSON struct {
	Kind        string      `json:"kind"`
	ContainerID string      `json:"containerId"`
	Config      []byte      `json:"config"`
	IfName      string      `json:"ifName"`
	NetworkName string      `json:"networkName"`
	NetNS       string      `json:"netns"`
	CNIArgs     [][2]string `json:"cniArgs,omitempty"`
	Result      cniResult   `json:"result"`
}

type cniResult struct {
	CNIVersion string         `json:"cniVersion"`
	Interfaces []cniInterface `json:"interfaces"`
	IPs        []cniIP        `json:"ips"`
}

type cniInterface struct {
	Name    string `json:"name"`
	Sandbox string `json:"sandbox,omitempty"`
}

type cniIP struct {
	Interface *int   `json:"interface"`
	Address   string `json:"address"`
	Gateway   string `json:"gateway"`
}

// writeCNIRecord writes the record of sb's eth0, as libcni does after CNI ADD: a plain write of a
// root-owned 0600 file (the controller's watch sees IN_CLOSE_WRITE).
func (k *Kubelet) writeCNIRecord(pod *corev1.Pod, sb *sandbox) error {
	dir := k.CNIResultsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("CNI result cache: %w", err)
	}
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": cniNetwork, "type": "bridge", "bridge": k.opts.Bridge})
	one := 1
	rec := cniRecordJSON{
		Kind: "cniCacheV1", ContainerID: sb.info.ID, Config: conf, IfName: "eth0", NetworkName: cniNetwork, NetNS: sb.info.NetnsPath,
		CNIArgs: [][2]string{
			{"K8S_POD_INFRA_CONTAINER_ID", sb.info.ID}, {"K8S_POD_UID", string(pod.UID)}, {"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace}, {"K8S_POD_NAME", pod.Name},
		},
		Result: cniResult{CNIVersion: "1.0.0", Interfaces: []cniInterface{{Name: sb.info.HostVeth}, {Name: "eth0", Sandbox: sb.info.NetnsPath}}},
	}
	for _, ip := range sb.info.IPs {
		p, gw := k.v4, k.v4.Addr()
		if ip.Is6() {
			p, gw = k.v6, k.v6.Addr()
		}
		rec.Result.IPs = append(rec.Result.IPs, cniIP{Interface: &one, Address: netip.PrefixFrom(ip, p.Bits()).String(), Gateway: gw.String()})
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := os.WriteFile(cniRecordPath(dir, sb.info.ID), data, 0o600); err != nil {
		return fmt.Errorf("CNI result cache: %w", err)
	}
	return nil
}

// removeCNIRecord removes sb's record, as CNI DEL does.
func (k *Kubelet) removeCNIRecord(sb *sandbox) {
	if err := os.Remove(cniRecordPath(k.CNIResultsDir(), sb.info.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		k.logf("sandbox %s: remove CNI record: %v", sb.info.ID, err)
	}
}

// AnnotationCNIRecord is a pod annotation read by the simulator only: "false" writes no CNI result
// record for the pod (a runtime whose libcni predates the cache, or that keeps it elsewhere), so
// that only /proc can prove its namespace.
const AnnotationCNIRecord = "kubelet.e2e.istio-pod-network-controller.test/cni-record"

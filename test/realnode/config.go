package realnode

import (
	"encoding/json"
	"fmt"
)

// The node's own names, so that it shares the machine with the simulated node (test/e2e/kubelet,
// which uses /sys/fs/cgroup/*/kubepods and 10.244.0.0/16) and with a container runtime of the host.
const (
	// CgroupRoot is the kubelet's cgroupRoot: its pods live under <hierarchy>/<CgroupRoot>/kubepods.
	CgroupRoot = "/istio-pod-network-controller-real-node"
	// Bridge is the CNI bridge of the node's pods.
	Bridge = "ipnc-real0"
	// PodCIDR is the pods' IPv4 range (host-local IPAM); its first address is the bridge's.
	PodCIDR = "10.89.0.0/24"
	// CNINetwork is the name of the CNI network (libcni's result cache files start with it).
	CNINetwork = "ipnc-real"
	// DefaultNodeName is the Node's name when Options.NodeName is empty.
	DefaultNodeName = "real-node"
	// PauseImage is the sandbox image (a static Go binary, imported at start).
	PauseImage = "localhost/istio-pod-network-controller/pause:e2e"
)

// dirs are the node's state paths, all under its state directory.
type dirs struct{ root string }

func (d dirs) p(name string) string              { return d.root + "/" + name }
func (d dirs) containerdSocket() string          { return d.p("containerd/containerd.sock") }
func (d dirs) containerdConfig() string          { return d.p("containerd/config.toml") }
func (d dirs) cniConfDir() string                { return d.p("cni/net.d") }
func (d dirs) kubeletRoot() string               { return d.p("kubelet") }
func (d dirs) kubeletConfig() string             { return d.p("kubelet-config.yaml") }
func (d dirs) kubeletKubeconfig() string         { return d.p("kubelet.kubeconfig") }
func (d dirs) runtimeEndpoint() string           { return "unix://" + d.containerdSocket() }
func (d dirs) logPath(component string) string   { return d.p(component + ".log") }
func (d dirs) ipamDir() string                   { return d.p("cni/ipam") }
func (d dirs) imagesDir() string                 { return d.p("images") }
func (d dirs) podLogsDir() string                { return d.p("pod-logs") }
func (d dirs) containerdDir(sub string) string   { return d.p("containerd/" + sub) }
func (d dirs) rulesSnapshot(stage string) string { return d.p("host-rules-" + stage + ".txt") }
func (d dirs) cniConfFile() string               { return d.cniConfDir() + "/10-" + CNINetwork + ".conflist" }
func (d dirs) nriDir(sub string) string          { return d.p("nri/" + sub) }

// containerdConfig is containerd 2.x's configuration (version 3): its own socket, root, state and
// opt directories; NRI as the nri section says (nriSection: off unless the node runs the release
// check); the CRI plugin with runc (cgroupfs, as the kubelet), the node's CNI conf directory and
// Debian's plugins, OOM score adjustments clamped (the VM lacks CAP_SYS_RESOURCE), and the locally
// imported pause image as the sandbox image.
func containerdConfig(d dirs, runc, cniBinDir, nri string) string {
	return fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
%[9]s

[grpc]
  address = %[3]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %[5]q

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [%[6]q]
    conf_dir = %[7]q
    max_conf_num = 1
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = %[8]q
        SystemdCgroup = false
`, d.containerdDir("root"), d.containerdDir("state"), d.containerdSocket(), d.containerdDir("opt"),
		PauseImage, cniBinDir, d.cniConfDir(), runc, nri)
}

// cniConfList is the pods' network: a bridge of the node's own, host-local IPAM on PodCIDR with
// its own data directory, no masquerading (no rules in the host's nat table) and no portmap.
func cniConfList(d dirs) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       CNINetwork,
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      Bridge,
			"isGateway":   true,
			"ipMasq":      false,
			"hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": PodCIDR}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": d.ipamDir(),
			},
		}},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// kubeletConfig is the KubeletConfiguration for this kind of machine (see docs/e2e.md, "real
// node"): cgroup v1 accepted, cgroupfs with a cgroup root of its own, no OOM score change of its
// own (no CAP_SYS_RESOURCE), no iptables chains in the host, its own ports, webhook authentication
// and authorization with the cluster CA for client certificates, eviction and image GC relaxed so a
// busy test machine keeps the imported images and pods.
func kubeletConfig(d dirs, caFile string, port, healthzPort int) ([]byte, error) {
	conf := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"failCgroupV1":             false,
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               CgroupRoot,
		"cgroupsPerQOS":            true,
		"oomScoreAdj":              0,
		"makeIPTablesUtilChains":   false,
		"failSwapOn":               false,
		"containerRuntimeEndpoint": d.runtimeEndpoint(),
		"port":                     port,
		"readOnlyPort":             0,
		"healthzBindAddress":       "127.0.0.1",
		"healthzPort":              healthzPort,
		"podLogsDir":               d.podLogsDir(),
		"volumePluginDir":          d.p("kubelet/volume-plugins"),
		"resolvConf":               "/etc/resolv.conf",
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]any{"clientCAFile": caFile},
		},
		"authorization": map[string]any{"mode": "Webhook"},
		"evictionHard": map[string]string{
			"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%",
		},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"serializeImagePulls":         false,
	}
	return json.MarshalIndent(conf, "", "  ")
}

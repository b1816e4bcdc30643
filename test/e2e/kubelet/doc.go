// Package kubelet simulates the kubelet of one node (node-a) on real Linux network namespaces, for
// the end-to-end tests and `make demo`.
//
// It watches the pods bound to its node (field selector spec.nodeName) and, for each one, does what
// the kubelet, containerd and the CNI bridge plugin would:
//
//   - creates a sandbox: a new network namespace (optionally registered as <NetnsDir>/cni-<uuid>, as
//     containerd does), a veth from the pod's eth0 to a node bridge (pnc-br0, 10.244.0.1/16 and
//     fd00:244::1/64), an IPv4 address (and an IPv6 one when the pod asks, see AnnotationIPFamilies)
//     with a default route through the bridge, and a long-lived "pause" process in the namespace,
//     placed in a cgroup whose path carries the pod UID as kubepods does
//     (/sys/fs/cgroup/<hierarchy>/kubepods/<qos>/pod<uid>/<container id>);
//   - publishes the pod's downward-API volumes into the wait container's root file system with the
//     kubelet's atomic "..data" symlink swap (package initwait/waittest), and republishes them when
//     the pod's annotations change;
//   - runs the real wait binary in the namespace and in the pod's cgroup, chrooted into a root file
//     system of its own (the binary, its volumes, /dev/termination-log), as the UID/GID of the wait
//     container's securityContext, with the container's args;
//   - writes the pod status through the status subresource: pod IPs, phase Pending and the wait
//     container running; when the wait binary exits 0, the init container terminated and the pod
//     Running with ready containers; when it exits non-zero, its termination message.
//
// Pods without the wait container are Running as soon as their sandbox is up; hostNetwork pods get
// no namespace of their own (their IP is the node's) and their wait container, if any, runs in the
// host namespace. Deleting a pod tears its sandbox down and confirms the deletion (grace period 0),
// as the kubelet does. Recreate replaces a pod's sandbox (a new namespace, the wait container
// running again). Stop removes everything the simulator made.
//
// The simulator is Linux only and needs root; elsewhere Start returns an error.
package kubelet

import "time"

// AnnotationIPFamilies is a pod annotation read by the simulator only (the CNI's business in a real
// cluster): "IPv4" (the default) gives the pod an IPv4 address, "IPv4,IPv6" a dual-stack pair.
const AnnotationIPFamilies = "kubelet.e2e.istio-pod-network-controller.test/ip-families"

// AnnotationRegisterNetns is a pod annotation read by the simulator only: "false" leaves the pod's
// namespace unregistered even when Options.NetnsDir is set (a runtime that does not name its
// namespaces), so only its processes hold it.
const AnnotationRegisterNetns = "kubelet.e2e.istio-pod-network-controller.test/register-netns"

// IP family lists accepted by AnnotationIPFamilies.
const (
	FamiliesIPv4 = "IPv4"
	FamiliesDual = "IPv4,IPv6"
)

// Defaults of Options.
const (
	DefaultNodeName          = "node-a"
	DefaultBridge            = "pnc-br0"
	DefaultPodCIDRv4         = "10.244.0.1/16" // the bridge's (gateway's) address and the pod prefix
	DefaultPodCIDRv6         = "fd00:244::1/64"
	DefaultWaitContainerName = "istio-pod-network-wait"
	DefaultCgroupRoot        = "/sys/fs/cgroup"
	DefaultWorkers           = 8
	DefaultSandboxWorkers    = 4
	// DefaultWaitUID is the UID the wait container runs as when neither its securityContext nor the
	// pod's sets one: the wait image's USER.
	DefaultWaitUID = 1337
)

// Timeline records when the simulator saw and did things for one sandbox of a pod (the zero time
// means not yet). Latencies are differences between these instants, all on this machine's clock.
type Timeline struct {
	// Seen is when the informer first delivered the pod.
	Seen time.Time
	// SandboxReady is when the namespace, its addresses and the pause process were up.
	SandboxReady time.Time
	// IPPublished is when the API server accepted the status carrying the pod IPs.
	IPPublished time.Time
	// Annotated is when the informer first delivered status=ready naming this sandbox's namespace.
	Annotated time.Time
	// WaitExited is when the wait process exited (before OnWaitExit ran).
	WaitExited time.Time
	// Released is when the API server accepted the Running status.
	Released time.Time
	// ExitCode is the wait process's exit code, valid once WaitExited is set.
	ExitCode int
}

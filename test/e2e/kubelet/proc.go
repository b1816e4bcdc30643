package kubelet

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

// newSandboxID returns a random UUID (the form containerd uses in cni-<uuid>).
func newSandboxID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// procSpec describes a process to start.
type procSpec struct {
	argv    []string
	env     []string
	ns      *netns.Handle // nil: the host's network namespace
	chroot  string        // "" keeps the host's root
	uid     uint32
	gid     uint32
	groups  []uint32
	log     string   // stdout and stderr are appended here
	cgroups []string // cgroup directories made for it and removed when it exits
}

// proc is a running process in its own process group.
type proc struct {
	pid   int
	log   string
	done  chan struct{} // closed once it has exited and its cgroups are removed
	state *os.ProcessState
}

// exitCode is the exit status, -1 when a signal ended the process.
func (p *proc) exitCode() int {
	if p.state == nil {
		return -1
	}
	return p.state.ExitCode()
}

// podCgroupPath is the pod's cgroup path below a hierarchy's root with the cgroupfs driver:
// kubepods/<qos>/pod<uid>, or kubepods/pod<uid> for Guaranteed pods.
func podCgroupPath(pod *corev1.Pod) string {
	switch pod.Status.QOSClass {
	case corev1.PodQOSGuaranteed:
		return "kubepods/pod" + string(pod.UID)
	case corev1.PodQOSBurstable:
		return "kubepods/burstable/pod" + string(pod.UID)
	}
	return "kubepods/besteffort/pod" + string(pod.UID)
}

// leafCgroups returns the container's cgroup directories below the pod's.
func leafCgroups(podDirs []string, id string) []string {
	out := make([]string, len(podDirs))
	for i, d := range podDirs {
		out[i] = filepath.Join(d, strings.TrimPrefix(id, "containerd://"))
	}
	return out
}

// removeCgroupDirs removes cgroup directories, deepest first; busy or missing ones are left.
func removeCgroupDirs(dirs []string) {
	for _, d := range slices.Backward(dirs) {
		_ = os.Remove(d)
	}
}

package realnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// RestartRuntime stops the kubelet and containerd (SIGTERM, as `systemctl stop` does) and starts
// both again. The shims, the pause and container processes and the pods' namespaces survive; the
// kubelet re-attaches to the existing sandboxes. It returns the node's downtime: from the kubelet's
// stop to its /healthz answering again.
func (n *Node) RestartRuntime(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	n.say("restart: stopping the kubelet and containerd")
	n.kubelet.Stop(10 * time.Second)
	n.containerd.Stop(10 * time.Second)
	if err := n.startAgain(ctx); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// Reboot emulates a reboot of the node without restarting the machine: the kubelet and
// containerd stop, then what a reboot takes away goes: containerd's shims and every process in
// the node's cgroup root (pause and containers), containerd's state directory (/run on a real
// node), the kubelet's and containerd's mounts (pod volumes, root file systems), the pods' cni-*
// namespaces and the bridge; what is on disk stays (containerd's root, the kubelet's root, libcni's
// result cache and the IPAM data). Then containerd and the kubelet start again: every sandbox is
// new. It returns the node's downtime (the kubelet's stop to its /healthz answering again).
func (n *Node) Reboot(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	n.say("reboot: stopping the kubelet and containerd")
	n.kubelet.Stop(10 * time.Second)
	n.containerd.Stop(10 * time.Second)
	var errs []error
	for _, pid := range shimPIDs(n.ContainerdSocket) {
		errs = append(errs, killPID(pid))
	}
	namespaces, err := n.podNamespaces()
	errs = append(errs, err, removeCgroupRoot(), makeCgroupRoot(),
		unmountUnder(n.d.kubeletRoot()), unmountUnder(n.d.containerdDir("state")), unmountUnder(n.d.containerdDir("root")))
	for _, ns := range namespaces {
		if err := syscall.Unmount(ns, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", ns, err))
		}
		if err := os.Remove(ns); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, os.RemoveAll(n.d.containerdDir("state")), deleteBridge())
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("reboot: %w", err)
	}
	n.say("reboot: %d pod namespaces and every process of the node gone", len(namespaces))
	if err := n.startAgain(ctx); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// podNamespaces lists the named namespaces of this node's sandboxes, from libcni's result cache
// of the node's network (records of other runtimes are not touched).
func (n *Node) podNamespaces() ([]string, error) {
	files, err := filepath.Glob(filepath.Join("/var/lib/cni/results", CNINetwork+"-*-eth0"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range files {
		r, err := readCNIRecord(f)
		if err != nil || !strings.Contains(r.Netns, "/netns/cni-") {
			continue
		}
		if _, err := os.Stat(r.Netns); err == nil {
			out = append(out, r.Netns)
		}
	}
	return out, nil
}

// startAgain starts containerd (and waits for the release check to register, when the node has
// it) and the kubelet with the configuration they had, then waits for the kubelet's /healthz.
func (n *Node) startAgain(ctx context.Context) error {
	if err := n.startContainerd(ctx); err != nil {
		return err
	}
	if err := n.startKubelet(ctx); err != nil {
		return err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", n.kubeletPorts[1])
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		resp, err := client.Get(url)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("the kubelet's %s after its restart: %w (last: %s)%s", url, err, last, n.LogTail(20))
	}
	return nil
}

// waitReleaseCheck waits until the release check has registered with containerd more than
// before times (it writes a "configured" record at each containerd start).
func (n *Node) waitReleaseCheck(ctx context.Context, before int) error {
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return n.releaseCheckStarts() > before, nil
	})
	if err != nil {
		return fmt.Errorf("the release check did not register with containerd: %w%s", err, n.LogTail(20))
	}
	return nil
}

// releaseCheckStarts counts the release check's "configured" records (one per containerd start).
func (n *Node) releaseCheckStarts() int {
	if !n.releaseCheck {
		return 0
	}
	recs, _ := n.ReleaseChecks()
	c := 0
	for _, r := range recs {
		if r.Kind == "configured" {
			c++
		}
	}
	return c
}

func readCNIRecord(file string) (cniRecord, error) {
	var r cniRecord
	b, err := os.ReadFile(file)
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(b, &r)
}

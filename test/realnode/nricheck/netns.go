package main

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/containerd/nri/pkg/api"
	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/controller"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/record"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

const contractNetns = contract.KeyNetns

// netnsPath is the network namespace the container joins, as the runtime gives it: the
// container's own OCI namespace path, else its sandbox's, else the sandbox process's.
func netnsPath(sb *api.PodSandbox, ctr *api.Container) string {
	for _, list := range [][]*api.LinuxNamespace{ctr.GetLinux().GetNamespaces(), sb.GetLinux().GetNamespaces()} {
		for _, n := range list {
			if n.GetType() == "network" && n.GetPath() != "" {
				return n.GetPath()
			}
		}
	}
	if sb.GetPid() != 0 {
		return fmt.Sprintf("/proc/%d/ns/net", sb.GetPid())
	}
	return ""
}

// pathFinder "finds" the namespace the container joins, whatever the pod: the check is about that
// namespace, not about the controller's discovery.
type pathFinder string

func (f pathFinder) Find(context.Context, string, []netip.Addr) (controller.Namespace, error) {
	h, err := netns.Open(string(f))
	if err != nil {
		return nil, err
	}
	return h, nil
}

// verifyOnly is the project's applier for the verdict: Verify reads and checks the live rules;
// the full listings of inspect's printout are not read (each is another iptables-save, under the
// runtime's NRI lock).
type verifyOnly struct{ a *netsetup.Applier }

func (v verifyOnly) Verify(ctx context.Context, ns controller.Namespace, key string, cfg *rules.Config) (netsetup.Result, error) {
	return v.a.Verify(ctx, ns, key, cfg)
}

func (v verifyOnly) Programmed(context.Context, controller.Namespace, string) (bool, error) {
	return false, nil
}

func (v verifyOnly) Live(context.Context, controller.Namespace, string, []rules.Family) (map[rules.Family]string, error) {
	return nil, nil
}

// Forget: the pathFinder caches nothing.
func (pathFinder) Forget(string) {}

// fromReleaseRecord returns a copy of pod whose annotations are what the release record in the
// namespace at path says (status, netns, rules, families), if there is a valid one.
func fromReleaseRecord(pod *corev1.Pod, path string) (*corev1.Pod, bool) {
	h, err := netns.Open(path)
	if err != nil {
		return nil, false
	}
	defer h.Close()
	var r record.Record
	if err := h.Do(func() error {
		var err error
		r, err = record.Read()
		return err
	}); err != nil {
		return nil, false
	}
	out := pod.DeepCopy()
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[contract.KeyStatus] = string(r.Status)
	out.Annotations[contract.KeyNetns] = r.Netns.String()
	out.Annotations[contract.KeyRules] = r.Rules
	out.Annotations[contract.KeyFamilies] = r.Families
	delete(out.Annotations, contract.KeyReason)
	return out, true
}

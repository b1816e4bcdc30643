package kubelet

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

// TestCNIRecordProvesTheNamespace: the record the simulator writes is one the controller's
// cni-cache strategy reads (libcni's shape, root-owned 0600) and that proves the sandbox's named
// namespace for the pod UID alone; removing it (CNI DEL) leaves nothing to prove it.
func TestCNIRecordProvesTheNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	n := testutil.NewNetns(t)
	n.Run(t, "ip", "addr", "add", "10.250.0.7/32", "dev", "lo")
	k := &Kubelet{stateDir: t.TempDir(), opts: Options{Bridge: "pnc-test"},
		v4: netip.MustParsePrefix("10.250.0.1/16"), v6: netip.MustParsePrefix("fd00:250::1/64")}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "0b5e8b52-4d1c-4cf6-9f3a-2a1bd3d2e001"}}
	sb := &sandbox{info: Sandbox{ID: newSandboxID(), NetnsPath: n.Path, HostVeth: "pncvtest", IPs: []netip.Addr{netip.MustParseAddr("10.250.0.7")}}}
	if err := k.writeCNIRecord(pod, sb); err != nil {
		t.Fatal(err)
	}
	rec, err := netns.ReadCNIRecord(cniRecordPath(k.CNIResultsDir(), sb.info.ID))
	if err != nil {
		t.Fatal(err)
	}
	if rec.PodUID != string(pod.UID) || rec.SandboxID != sb.info.ID || rec.NetNS != n.Path || rec.IfName != "eth0" ||
		!slices.Equal(rec.IPs, sb.info.IPs) {
		t.Errorf("record %+v does not describe sandbox %+v of pod %s", rec, sb.info, pod.UID)
	}
	find := func() (*netns.Handle, error) {
		f, err := netns.New(netns.Options{Strategies: []netns.Strategy{netns.StrategyNamed, netns.StrategyCNICache},
			NetnsDirs: []string{"/run/netns"}, CNIResultsDir: k.CNIResultsDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return f.Find(context.Background(), string(pod.UID), sb.info.IPs)
	}
	h, err := find()
	if err != nil {
		t.Fatalf("find with the record: %v", err)
	}
	if p := h.Proof(); !slices.Contains(p.Evidence, netns.StrategyCNICache) || p.SandboxID != sb.info.ID {
		t.Errorf("found %s with proof %v, want the cni-cache record's", h.Path(), h.Proof())
	}
	h.Close()
	k.removeCNIRecord(sb)
	if h, err := find(); err == nil {
		h.Close()
		t.Error("the namespace is still proven after its record was removed")
	}
}

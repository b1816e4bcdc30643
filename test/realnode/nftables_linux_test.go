package realnode

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/nft"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
)

// TestNftablesOnTheRealNode: the chart installed with nativeNftables=true (the controller runs
// with --rules-backend=nftables, the istiod values set global.nativeNftables: true); a Deployment
// of 3 injected pods in a "restricted" namespace, released by the unchanged wait container through
// the real kubelet; each pod's namespace holds exactly Istio's nftables tables for its
// configuration (read back over netlink, routes included) and no iptables rules; real TCP through
// each redirect; the host's rules unchanged at the end.
func TestNftablesOnTheRealNode(t *testing.T) {
	_, archives := gateAndBuild(t)
	ctx := t.Context()
	n := StartForTest(t, Options{Images: archives})
	before, err := HostRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := n.HelmInstall(ctx, "", release, controllerNS, "nativeNftables=true"); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("helm install:\n%s", out)
	}
	ctrl := n.controllerPod(t)
	if args := ctrl.Spec.Containers[0].Args; !slices.Contains(args, "--rules-backend=nftables") {
		t.Errorf("controller args %q: want --rules-backend=nftables", args)
	}
	checkIstiodNativeNftables(t, n)

	n.meshNamespace(t)
	n.createMeshDeployment(t, 3, nil)
	t0 := time.Now()
	pods := n.waitReleased(t, 3, nil)
	t.Logf("figure: 3 pods created → released and Ready with the nftables backend in %s", time.Since(t0).Round(time.Millisecond))
	for i := range pods {
		p := &pods[i]
		if got := p.Annotations[contract.KeyBackend]; got != string(contract.BackendNftables) {
			t.Errorf("pod %s: %s=%q, want nftables", p.Name, contract.KeyBackend, got)
		}
		path, err := PodNetns(string(p.UID))
		if err != nil {
			t.Fatal(err)
		}
		checkNftablesOnly(t, p, path)
		if err := CheckRecord(path, p.Annotations[contract.KeyNetns]); err != nil {
			t.Errorf("pod %s: %v", p.Name, err)
		}
		checkTraffic(t, path, p.Status.PodIP)
	}

	if err := n.Cluster.Client.AppsV1().Deployments(meshNS).Delete(ctx, deployment, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitPods(t, meshNS, "no pods left", func(ps []corev1.Pod) bool { return len(ps) == 0 })
	hostRulesUnchanged(t, "the nftables scenario", before)
}

// checkNftablesOnly checks the pod's namespace: exactly the nftables tables and routes of its
// configuration, as the released rules hash names them, and no iptables rules of either iptables
// backend (legacy tables from /proc, iptables-nft chains over netlink; no save tool is run).
func checkNftablesOnly(t *testing.T, p *corev1.Pod, path string) {
	t.Helper()
	h, err := netns.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cfg, err := podconfig.FromPod(p)
	if err != nil {
		t.Fatal(err)
	}
	a := nft.NewApplier()
	res, err := a.Verify(context.Background(), h, string(p.UID), cfg)
	if err != nil {
		t.Errorf("pod %s: the live nftables rules in %s are not its configuration's: %v", p.Name, path, err)
	} else if res.Hash != p.Annotations[contract.KeyRules] {
		t.Errorf("pod %s: released with rules %s, the live nftables rules hash to %s", p.Name, p.Annotations[contract.KeyRules], res.Hash)
	}
	if foreign, err := a.Foreign(h); err != nil || foreign != "" {
		t.Errorf("pod %s: %q %v", p.Name, foreign, err)
	}
}

// checkIstiodNativeNftables checks that the istiod values the chart printed set Istio's
// global.nativeNftables to true, as the controller's backend.
func checkIstiodNativeNftables(t *testing.T, n *Node) {
	t.Helper()
	cm, err := n.Cluster.Client.CoreV1().ConfigMaps(controllerNS).Get(t.Context(), release+"-istiod-values", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["istiod-values.yaml"]), &values); err != nil {
		t.Fatal(err)
	}
	got, found, err := unstructured.NestedBool(values, "global", "nativeNftables")
	if err != nil || !found || !got {
		t.Errorf("istiod values global.nativeNftables = %v (found %v, %v), want true:\n%s", got, found, err,
			strings.TrimSpace(cm.Data["istiod-values.yaml"]))
	}
}

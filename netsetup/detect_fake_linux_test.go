package netsetup

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/iptablestest"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

const kubeletHint = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"

// TestFakeDetectBackend: the kubelet's hint chain in the host's nft or legacy tables decides; a pod
// holding a hint changes nothing (detection never looks inside a pod); no hint means nft; both
// tools missing is an error naming both.
func TestFakeDetectBackend(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		setup   func(n *fakeNode)
		want    Backend
		wantErr string
	}{
		{"hint in legacy", func(n *fakeNode) { mustRestore(t, n.Host(), "legacy", kubeletHint) }, BackendLegacy, ""},
		{"hint in nft", func(n *fakeNode) { mustRestore(t, n.Host(), "nft", kubeletHint) }, BackendNFT, ""},
		{"canary in legacy", func(n *fakeNode) {
			mustRestore(t, n.Host(), "legacy", "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n")
		}, BackendLegacy, ""},
		{"no hint", func(*fakeNode) {}, BackendNFT, ""},
		{"hint only inside a pod", func(n *fakeNode) { mustRestore(t, n.NewNamespace("pod"), "legacy", kubeletHint) }, BackendNFT, ""},
		{"legacy tools missing", func(n *fakeNode) { n.RemoveBackend("legacy") }, BackendNFT, ""},
		{"no tools", func(n *fakeNode) { n.RemoveBackend("legacy"); n.RemoveBackend("nft") }, "", "iptables-legacy-save"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newFakeNode()
			c.setup(n)
			got, err := DetectBackend(ctx, n.system().run)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "iptables-nft-save") || !errors.Is(err, exec.ErrNotFound) {
					t.Fatalf("got %q, %v; want an error naming both tools", got, err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %q, %v; want %q", got, err, c.want)
			}
			for _, call := range n.Calls() {
				if call.Namespace != "host" {
					t.Errorf("detection ran %s in %s", call.Name, call.Namespace)
				}
			}
			// NewApplier without a backend detects the same one.
			if a := n.applier(t, ""); a.Backend() != c.want {
				t.Errorf("NewApplier detected %q, want %q", a.Backend(), c.want)
			}
		})
	}
}

func mustRestore(t *testing.T, ns *iptablestest.Namespace, backend, input string) {
	t.Helper()
	if err := ns.Restore(backend, rules.IPv4, input); err != nil {
		t.Fatal(err)
	}
}

// TestFakeForeignRules: ISTIO_* chains in the other backend are reported, someone else's rules
// there are not, and a pod without legacy tables is never given any (no legacy save runs).
func TestFakeForeignRules(t *testing.T) {
	ctx := context.Background()
	istio := "*nat\n:ISTIO_OUTPUT - [0:0]\n-A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n"
	cases := []struct {
		name    string
		backend Backend
		other   string // the other backend's tables in the pod, IPv4
		otherV6 string
		want    bool
	}{
		{"istio in legacy", BackendNFT, istio, "", true},
		{"istio in legacy IPv6 only", BackendNFT, "", istio, true},
		{"someone else in legacy", BackendNFT, someoneElse, "", false},
		{"no legacy tables", BackendNFT, "", "", false},
		{"istio in nft", BackendLegacy, istio, "", true},
		{"nothing in nft", BackendLegacy, "", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newFakeNode()
			a := n.applier(t, c.backend)
			pod := n.NewNamespace("pod")
			other := string(c.backend.Other())
			if c.other != "" {
				mustRestore(t, pod, other, c.other)
			}
			if c.otherV6 != "" {
				if err := pod.Restore(other, rules.IPv6, c.otherV6); err != nil {
					t.Fatal(err)
				}
			}
			got, err := a.ForeignRules(ctx, pod, "pod-a")
			if err != nil || got != c.want {
				t.Fatalf("ForeignRules = %t, %v; want %t", got, err, c.want)
			}
			if c.name == "no legacy tables" {
				for _, call := range n.Calls() {
					if strings.Contains(call.Name, "legacy") {
						t.Errorf("ran %s in a pod without legacy tables", call.Name)
					}
				}
				if len(pod.LegacyTables(rules.IPv4)) > 0 {
					t.Error("legacy tables created in the pod")
				}
			}
		})
	}
}

package main

import (
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/nft"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
)

func TestRenderNftables(t *testing.T) {
	code, out, stderr := runCLI([]string{"render", "--backend", "nftables", "-f", "-"}, podYAML)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	pod, err := podconfig.ReadPod(strings.NewReader(podYAML), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := podconfig.FromPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := nft.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if out != rs.Text() {
		t.Fatalf("output is not the pod's nftables transaction:\n%s", out)
	}
	for _, want := range []string{"add table inet istio-proxy-nat\n", "tcp dport 8081 counter return\n", "redirect to :15006\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, stderr = runCLI([]string{"render", "--backend", "nft", "-f", "-"}, podYAML)
	if code != 2 || out != "" || !strings.Contains(stderr, `--backend "nft": want iptables or nftables`) {
		t.Fatalf("bad backend: exit %d, out %q, stderr %q", code, out, stderr)
	}
}

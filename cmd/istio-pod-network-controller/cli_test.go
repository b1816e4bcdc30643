package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
)

const podYAML = `apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations:
    traffic.sidecar.istio.io/excludeInboundPorts: "8081"
spec:
  containers:
  - name: app
    image: app
  - name: istio-proxy
    image: proxyv2
status:
  podIPs:
  - ip: 10.1.2.3
`

func runCLI(args []string, stdin string) (int, string, string) {
	var out, errb bytes.Buffer
	code := dispatch(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestRender(t *testing.T) {
	code, out, stderr := runCLI([]string{"render", "-f", "-"}, podYAML)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.HasPrefix(out, "# iptables-restore\n* nat\n") || strings.Contains(out, "ip6tables") ||
		!strings.Contains(out, "-A ISTIO_INBOUND -p tcp --dport 8081 -j RETURN\n") {
		t.Fatalf("unexpected output:\n%s", out)
	}
	dual := strings.Replace(podYAML, "  - ip: 10.1.2.3", "  - ip: fd00::3\n  - ip: 10.1.2.3", 1)
	if code, out, _ = runCLI([]string{"render", "-f", "-"}, dual); code != 0 || !strings.Contains(out, "# ip6tables-restore\n* nat\n") ||
		!strings.Contains(out, "-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN") {
		t.Fatalf("IPv6-first pod: exit %d\n%s", code, out)
	}
}

func TestRenderRejectsBadInput(t *testing.T) {
	bad := strings.Replace(podYAML, `"8081"`, `"8081,"`, 1)
	cases := map[string]struct {
		args  []string
		stdin string
		want  string
	}{
		"bad annotation": {[]string{"render", "-f", "-"}, bad, `traffic.sidecar.istio.io/excludeInboundPorts: invalid value "8081,"`},
		"not a pod":      {[]string{"render", "-f", "-"}, "apiVersion: v1\nkind: Service\n", `kind "Service"`},
		"unknown field":  {[]string{"render", "-f", "-"}, podYAML + "bogus: 1\n", "bogus"},
		"no -f":          {[]string{"render"}, "", "-f POD is required"},
		"missing file":   {[]string{"render", "-f", "/nonexistent.yaml"}, "", "/nonexistent.yaml"},
		"unknown cmd":    {[]string{"frobnicate"}, "", `unknown command "frobnicate"`},
		"exploding pod":  {[]string{"render", "-f", "-"}, explodingPodYAML(), "istio.io/reroute-virtual-interfaces: 1000 elements, more than the limit of 32"},
		"apply bad flag": {[]string{"apply", "--netns", "/x", "-f", "-", "--iptables-backend", "nftables"}, podYAML, `iptables backend "nftables"`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			code, out, stderr := runCLI(c.args, c.stdin)
			if code != 2 || out != "" || !strings.Contains(stderr, c.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2, no stdout, %q", code, out, stderr, c.want)
			}
		})
	}
}

// explodingPodYAML is the pod of the exhaustion finding: 15.6 KB of annotations for which Istio's
// generator makes a million rules (1000 CIDRs, each repeated for 1000 virtual interfaces).
func explodingPodYAML() string {
	cidrs := make([]string, 1000)
	for i := range cidrs {
		cidrs[i] = fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
	}
	return strings.Replace(podYAML, `traffic.sidecar.istio.io/excludeInboundPorts: "8081"`,
		`traffic.sidecar.istio.io/includeOutboundIPRanges: "`+strings.Join(cidrs, ",")+`"
    istio.io/reroute-virtual-interfaces: "`+strings.Repeat("net1,", 999)+`net1"`, 1)
}

// TestApplyTwice programs a real namespace through the command and checks the second run changes nothing.
func TestApplyTwice(t *testing.T) {
	n := testutil.NewNetns(t)
	pod := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(pod, []byte(podYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"apply", "--netns", n.Path, "-f", pod, "--iptables-backend", "nft", "--lock-dir", t.TempDir()}
	code, hash1, stderr := runCLI(args, "")
	if code != 0 || !strings.Contains(stderr, "programmed") {
		t.Fatalf("first apply: exit %d: %s", code, stderr)
	}
	code, hash2, stderr := runCLI(args, "")
	if code != 0 || !strings.Contains(stderr, "unchanged") || hash1 != hash2 || len(strings.TrimSpace(hash1)) != 16 {
		t.Fatalf("second apply: exit %d, hashes %q %q: %s", code, hash1, hash2, stderr)
	}
	if live := n.Run(t, "iptables-nft-save", "-t", "nat"); !strings.Contains(live, "--dport 8081 -j RETURN") {
		t.Fatalf("live rules lack the pod's exclusion:\n%s", live)
	}
	if code, _, stderr = runCLI([]string{"apply", "--netns", "/nonexistent", "-f", pod}, ""); code != 1 || !strings.Contains(stderr, "/nonexistent") {
		t.Fatalf("missing namespace: exit %d: %s", code, stderr)
	}
}

package realnode

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// checkRulesEqualRender compares the pod's live iptables (nft backend, the node's) with what
// `istio-pod-network-controller render` prints for the live pod, both read back by the same
// iptables-nft-save: the render payload is restored into a fresh scratch namespace first, so both
// sides are in iptables-save's canonical form. Nothing else may be in the pod's namespace.
func checkRulesEqualRender(t *testing.T, bin string, p *corev1.Pod, podNetns string) {
	t.Helper()
	// As `kubectl get pod -o json` prints it: typed client objects come without their kind.
	live := p.DeepCopy()
	live.Kind, live.APIVersion = "Pod", "v1"
	manifest, err := json.Marshal(live)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "render", "-f", "-")
	cmd.Stdin = bytes.NewReader(manifest)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("render pod %s: %v: %s", p.Name, err, stderr.String())
	}
	payload, ok := strings.CutPrefix(string(out), "# iptables-restore\n")
	if !ok || strings.Contains(payload, "# ip6tables-restore") {
		t.Fatalf("render pod %s: want one IPv4 payload, got:\n%s", p.Name, out)
	}

	scratch := "ipnc-real-scratch-" + randomHex()
	if out, err := exec.Command("ip", "netns", "add", scratch).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", scratch, err, out)
	}
	defer exec.Command("ip", "netns", "delete", scratch).Run()
	restore := exec.Command("ip", "netns", "exec", scratch, "iptables-nft-restore")
	restore.Stdin = strings.NewReader(payload)
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("iptables-nft-restore of the rendered rules in a scratch namespace: %v: %s", err, out)
	}
	want := saveIn(t, "/run/netns/"+scratch)
	got := saveIn(t, podNetns)
	if got != want {
		t.Errorf("pod %s: live rules in %s differ from render:\n--- render\n%s\n--- live\n%s", p.Name, podNetns, want, got)
	}
	if !strings.Contains(got, "ISTIO_OUTPUT") {
		t.Errorf("pod %s: no ISTIO_OUTPUT chain in the live rules:\n%s", p.Name, got)
	}
}

// saveIn is iptables-nft-save in a namespace, without comments and counters.
func saveIn(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+path, "iptables-nft-save").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-nft-save in %s: %v: %s", path, err, out)
	}
	var b strings.Builder
	for line := range strings.Lines(string(out)) {
		if !strings.HasPrefix(line, "#") {
			b.WriteString(counters.ReplaceAllString(line, "[-]"))
		}
	}
	return b.String()
}

func randomHex() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var (
	probeOnce sync.Once
	probeBin  string
	probeErr  error
)

// probe builds test/e2e/probe (the simulated tier's TCP client) once.
func probe(t *testing.T) string {
	probeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ipnc-real-probe-")
		if err != nil {
			probeErr = err
			return
		}
		if probeErr = os.Chmod(dir, 0o755); probeErr != nil { // the probe runs as the pod's UIDs
			return
		}
		probeErr = harness.GoBuild(context.Background(), dir, "./test/e2e/probe")
		probeBin = filepath.Join(dir, "probe")
	})
	if probeErr != nil {
		t.Fatal(probeErr)
	}
	return probeBin
}

// checkTraffic proves the pod's redirect with real TCP against the stand-in istio-proxy: from the
// node to the pod's 8080 lands on 15006 with the original destination; from the application's UID
// (1000) to an address outside the pod (a listener on the node) lands on 15001 with the original
// destination; from the proxy's UID (1337) it reaches the node's listener untouched.
func checkTraffic(t *testing.T, podNetns, podIP string) {
	t.Helper()
	nodeIP, err := NodeIP()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp4", net.JoinHostPort(nodeIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "host %s\n", c.LocalAddr())
			c.Close()
		}
	}()
	outside := l.Addr().String()
	inbound := net.JoinHostPort(podIP, "8080")

	if got, want := dial(t, "", 0, inbound), "15006 "+inbound; got != want {
		t.Errorf("inbound %s from the node: got %q, want %q (redirected to the proxy's 15006)", inbound, got, want)
	}
	if got, want := dial(t, podNetns, 1000, outside), "15001 "+outside; got != want {
		t.Errorf("outbound to %s as the application (UID 1000): got %q, want %q (redirected to the proxy's 15001)", outside, got, want)
	}
	if got, want := dial(t, podNetns, 1337, outside), "host "+outside; got != want {
		t.Errorf("outbound to %s as the proxy (UID 1337): got %q, want %q (not redirected)", outside, got, want)
	}
}

// dial runs the probe against addr, from the host (podNetns "") or inside the pod's namespace as
// uid, and returns the first line it printed.
func dial(t *testing.T, podNetns string, uid uint32, addr string) string {
	t.Helper()
	bin := probe(t)
	run := func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, addr)
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		}
		out, err := cmd.Output()
		if _, ok := err.(*exec.ExitError); ok {
			err = nil // the probe printed the error
		}
		return out, err
	}
	var out []byte
	var err error
	if podNetns == "" {
		out, err = run()
	} else {
		h, oerr := netns.Open(podNetns)
		if oerr != nil {
			t.Fatal(oerr)
		}
		defer h.Close()
		err = h.Do(func() error {
			var rerr error
			out, rerr = run()
			return rerr
		})
	}
	if err != nil {
		t.Fatalf("probe %s (namespace %q, UID %d): %v", addr, podNetns, uid, err)
	}
	return strings.TrimSpace(string(out))
}

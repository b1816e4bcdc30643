package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

func TestInspectUsage(t *testing.T) {
	cases := map[string]struct {
		args []string
		want string
	}{
		"no pod":        {[]string{"inspect"}, "inspect: give one POD name, or -f POD.yaml"},
		"two pods":      {[]string{"inspect", "-n", "app", "a", "b"}, "inspect: give one POD name, or -f POD.yaml"},
		"pod and file":  {[]string{"inspect", "a", "-f", "pod.yaml"}, "inspect: give one POD name, or -f POD.yaml"},
		"bad discovery": {[]string{"inspect", "a", "--discovery=proc"}, `inspect: flag --discovery: invalid value "proc": unknown strategy "proc" (want named, cni-cache, proc-uid or proc-ip)`},
		"bad backend":   {[]string{"inspect", "--iptables-backend=iptables", "a"}, `inspect: flag --iptables-backend: invalid value "iptables"`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			code, out, stderr := runCLI(c.args, "")
			if code != 2 || out != "" || !strings.Contains(stderr, c.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and %q", code, out, stderr, c.want)
			}
		})
	}
	if code, _, stderr := runCLI([]string{"inspect", "-h"}, ""); code != 0 || !strings.Contains(stderr, "5  STALE NAMESPACE") {
		t.Fatalf("inspect -h: exit %d:\n%s", code, stderr)
	}
}

const inspectPod = `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: app
  uid: 3f1c0c6e-8d7b-4c52-9a53-4a7e7d0b1a%s
  annotations:
%s
spec:
  nodeName: node-a
  initContainers:
  - name: istio-pod-network-wait
    image: wait
  containers:
  - name: app
    image: app
  - name: istio-proxy
    image: proxyv2
status:
  podIPs:
  - ip: %s
`

// TestInspectRealNamespace programs a real namespace with apply, then inspects the pod through a
// manifest: OK, then each verdict the live state or the annotations call for, with its exit code.
// The namespace is found by name and proven the pod's by a CNI result record.
func TestInspectRealNamespace(t *testing.T) {
	pod, peer := testutil.NewNetns(t), testutil.NewNetns(t)
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	ip := fmt.Sprintf("10.%d.%d.%d", 180+b[0]%20, b[1], 10)
	testutil.Link(t, pod, []string{ip + "/24"}, peer, "veth0", []string{fmt.Sprintf("10.%d.%d.1/24", 180+b[0]%20, b[1])})
	h, err := netns.Open(pod.Path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := h.ID()
	h.Close()
	if err != nil {
		t.Fatal(err)
	}

	dir, locks := t.TempDir(), t.TempDir()
	// The proof that the named namespace is the pod's: the CNI result record the runtime would have
	// written for its sandbox (root-owned, 0600, as libcni writes it), naming the manifest's UID.
	uid, sandbox := fmt.Sprintf("3f1c0c6e-8d7b-4c52-9a53-4a7e7d0b1a%02x", b[0]), fmt.Sprintf("%064x", b)
	results := t.TempDir()
	record, err := json.Marshal(map[string]any{
		"kind": "cniCacheV1", "containerId": sandbox, "ifName": "eth0", "networkName": "bridge", "netns": pod.Path,
		"cniArgs": [][2]string{{"K8S_POD_NAMESPACE", "app"}, {"K8S_POD_NAME", "web"}, {"K8S_POD_INFRA_CONTAINER_ID", sandbox}, {"K8S_POD_UID", uid}},
		"result":  map[string]any{"cniVersion": "1.0.0", "ips": []map[string]any{{"address": ip + "/24"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(results, "bridge-"+sandbox+"-eth0"), record, 0o600); err != nil {
		t.Fatal(err)
	}
	manifest := func(name string, annotations ...string) string {
		ann := "    sidecar.istio.io/status: '{}'"
		for i := 0; i < len(annotations); i += 2 {
			ann += fmt.Sprintf("\n    %s: %q", annotations[i], annotations[i+1])
		}
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(fmt.Sprintf(inspectPod, fmt.Sprintf("%02x", b[0]), ann, ip)), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	code, out, stderr := runCLI([]string{"apply", "--netns", pod.Path, "-f", manifest("plain"), "--iptables-backend", "nft", "--lock-dir", locks}, "")
	if code != 0 {
		t.Fatalf("apply: exit %d: %s", code, stderr)
	}
	hash := strings.TrimSpace(out)
	ready := func(netnsID string, extra ...string) []string {
		return append([]string{"pod-network-controller.istio.io/status", "ready", "pod-network-controller.istio.io/netns", netnsID,
			"pod-network-controller.istio.io/rules", hash, "pod-network-controller.istio.io/families", "ipv4"}, extra...)
	}
	inspect := func(path string) (int, string) {
		code, out, stderr := runCLI([]string{"inspect", "-f", path, "--discovery=named,cni-cache", "--cni-results-dir", results, "--netns-dirs=/run/netns",
			"--iptables-backend=nft", "--lock-dir", locks}, "")
		if stderr != "" {
			t.Logf("stderr: %s", stderr)
		}
		return code, out
	}
	check := func(name string, path string, wantCode int, wantLines ...string) {
		t.Helper()
		code, out := inspect(path)
		t.Logf("%s: exit %d\n%s", name, code, out)
		if code != wantCode {
			t.Fatalf("%s: exit %d, want %d:\n%s", name, code, wantCode, out)
		}
		for _, w := range wantLines {
			if !strings.Contains(out, w) {
				t.Fatalf("%s: output lacks %q:\n%s", name, w, out)
			}
		}
	}

	check("released", manifest("ok", ready(id.String())...), 0,
		"Verdict:      OK: network namespace "+id.String()+" holds the released rules "+hash,
		"Namespace:    "+id.String()+" ("+pod.Path+")",
		"-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN", // live, in iptables-save's form
		"  -A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN")      // implied, in Istio's form
	check("not annotated", manifest("plain"), 4, "Verdict:      NOT PROGRAMMED: the controller has not annotated the pod")
	check("stale", manifest("stale", ready("cookie:1")...), 5, "Verdict:      STALE NAMESPACE: released for network namespace cookie:1")
	check("edited", manifest("edited", ready(id.String(), "traffic.sidecar.istio.io/excludeInboundPorts", "8081")...), 6,
		"Verdict:      SPEC CHANGED: released with rules "+hash, "rules are live")

	pod.Run(t, "iptables-nft", "-t", "nat", "-F", "ISTIO_INBOUND")
	check("drifted", manifest("ok", ready(id.String())...), 3, "Verdict:      DRIFT: the live rules differ from the released rules "+hash)
}

// TestRunningControllerConfig reads the node settings of a controller running as PID 1 from a /proc
// laid out as in the chart's container, and nothing from a PID 1 that is not the controller.
func TestRunningControllerConfig(t *testing.T) {
	proc := func(argv ...string) string {
		dir := t.TempDir()
		if argv != nil {
			if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "1", "cmdline"), []byte(strings.Join(argv, "\x00")+"\x00"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	getenv := func(string) string { return "" }
	// The args the chart's DaemonSet template gives (templates/daemonset.yaml).
	chart := proc("/usr/local/bin/istio-pod-network-controller", "run", "--wait-container-name=istio-pod-network-wait",
		"--drift-period=30s", "--metrics-bind-address=:15090", "--health-probe-bind-address=:15091", "--iptables-backend=auto",
		"--discovery=named,cni-cache,proc-uid", "--host-proc=/host/proc", "--netns-dirs=/host/run/netns,/host/var/run/netns",
		"--cni-results-dir=/host/var/lib/cni/results",
		"--lock-dir=/var/run/istio-pod-network-controller/locks", "--kube-api-qps=20", "--kube-api-burst=40", "--workers=8", "-v=2")
	got, err := runningControllerConfig(chart, 4242, getenv)
	if err != nil || got == nil {
		t.Fatalf("chart's container: %v, %v", got, err)
	}
	if got.HostProc != "/host/proc" || got.NetnsDirs != "/host/run/netns,/host/var/run/netns" || got.Discovery != "named,cni-cache,proc-uid" ||
		got.CNIResultsDir != "/host/var/lib/cni/results" ||
		got.LockDir != "/var/run/istio-pod-network-controller/locks" || got.IPTablesBackend != "auto" || got.WaitContainerName != "istio-pod-network-wait" {
		t.Fatalf("chart's container: got %+v", *got)
	}
	if got, err := runningControllerConfig(chart, 1, getenv); got != nil || err != nil {
		t.Fatalf("inspect as PID 1 itself: %v, %v; want nothing", got, err)
	}
	for name, dir := range map[string]string{
		"init system":         proc("/sbin/init", "splash"),
		"controller's render": proc("/usr/local/bin/istio-pod-network-controller", "render", "-f", "pod.yaml"),
		"a shell":             proc("/bin/sh", "-c", "istio-pod-network-controller run"),
		"no /proc/1":          proc(),
	} {
		if got, err := runningControllerConfig(dir, 4242, getenv); got != nil || err != nil {
			t.Fatalf("%s: %+v, %v; want nothing", name, got, err)
		}
	}
	if _, err := runningControllerConfig(proc("istio-pod-network-controller", "run", "--no-such-flag"), 4242, getenv); err == nil ||
		!strings.Contains(err.Error(), "PID 1") || !strings.Contains(err.Error(), "--no-such-flag") {
		t.Fatalf("unknown flag in PID 1's args: %v", err)
	}
	// On this machine, PID 1 is not the controller: the host defaults stay.
	if got, err := runningControllerConfig("/proc", os.Getpid(), os.Getenv); got != nil || err != nil {
		t.Fatalf("this machine's /proc: %+v, %v; want nothing", got, err)
	}
}

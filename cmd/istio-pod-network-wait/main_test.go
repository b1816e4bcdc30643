package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/initwait"
	"github.com/redhat-cop/istio-pod-network-controller/initwait/waittest"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

func runMain(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelpExplainsStatesExitCodesAndUID(t *testing.T) {
	code, _, help := runMain("--help")
	if code != 0 {
		t.Errorf("--help exit code %d, want 0", code)
	}
	for _, want := range []string{
		"-annotations-file", "-timeout", "-termination-message-path", "-poll", "-print-netns-id",
		"status=pending", "status=failed", "stale", "0  released", "2  usage", "3  --timeout", "4  the controller reports",
		"5  --timeout passed while ready", "runAsUser (0 or unset means 1337)", "interceptionMode is NONE",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{[]string{"--timeout", "soon"}, `invalid value "soon" for flag -timeout`},
		{[]string{"--timeout=-5s"}, `timeout "-5s": must not be negative`},
		{[]string{"--annotations-file="}, `annotations file "": must not be empty`},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		code, _, stderr := runMain(tc.args...)
		if code != int(initwait.ExitUsage) || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, initwait.ExitUsage, tc.want)
		}
	}
}

// TestFlagsReachRun checks that the flags are wired: the wait reads the given file (pending at
// first: it logs so) and, with --poll, polls it; a failed annotation written there then ends it with
// exit 4 and the reason in the given termination-message file.
func TestFlagsReachRun(t *testing.T) {
	dir := t.TempDir()
	podinfo := filepath.Join(dir, "podinfo")
	term := filepath.Join(dir, "termination-log")
	reason := `annotation sidecar.istio.io/interceptionMode: "BOGUS" is not REDIRECT, TPROXY or NONE`
	if err := waittest.WriteAnnotations(podinfo, map[string]string{contract.KeyStatus: string(contract.StatusPending)}); err != nil {
		t.Fatal(err)
	}
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		var out bytes.Buffer
		done <- run(context.Background(), []string{"--annotations-file", filepath.Join(podinfo, "annotations"),
			"--termination-message-path", term, "--timeout", "1h", "--poll"}, &out, wr)
		wr.Close()
	}()
	var stderr strings.Builder
	lines := bufio.NewScanner(r)
	for lines.Scan() {
		stderr.WriteString(lines.Text() + "\n")
		if strings.Contains(lines.Text(), "the controller reports pending") {
			if err := waittest.WriteAnnotations(podinfo, map[string]string{
				contract.KeyStatus: string(contract.StatusFailed), contract.KeyReason: reason,
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if code := <-done; code != int(initwait.ExitFailed) {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, initwait.ExitFailed, stderr.String())
	}
	if msg, _ := os.ReadFile(term); !strings.Contains(string(msg), reason) {
		t.Errorf("termination message %q does not hold the reason", msg)
	}
	if !strings.Contains(stderr.String(), "inotify disabled by option") || !strings.Contains(stderr.String(), "timeout=1h0m0s") {
		t.Errorf("--poll or --timeout did not reach Run; stderr:\n%s", stderr.String())
	}
}

// TestDependencies keeps the binary small and unprivileged: only the standard library, x/sys and
// the project's annotation contract, Istio's annotation names (istioapi: constants only), the
// release record (rtnetlink through x/sys/unix) and initwait packages; no client-go, klog, iptables
// or netlink library.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{
		"github.com/redhat-cop/istio-pod-network-controller/cmd/istio-pod-network-wait": true,
		"github.com/redhat-cop/istio-pod-network-controller/initwait":                   true,
		"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract":          true,
		"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi":          true,
		"github.com/redhat-cop/istio-pod-network-controller/netsetup/record":            true,
		"golang.org/x/sys/unix": true,
	}
	for _, dep := range strings.Fields(string(out)) {
		if !allowed[dep] {
			t.Errorf("the wait binary imports %q: only the standard library, golang.org/x/sys/unix, initwait, netsetup/contract, netsetup/istioapi and netsetup/record are allowed", dep)
		}
	}
}

package main

import (
	"strings"
	"testing"
)

func TestRunRejectsBadFlags(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	cases := map[string]struct {
		args []string
		want []string
	}{
		"missing node and bad workers": {[]string{"run", "--workers=0"}, []string{
			`run: flag --node-name: invalid value "": required (or set NODE_NAME)`,
			`run: flag --workers: invalid value "0": want 1 to 64`}},
		"bad duration": {[]string{"run", "--node-name=n", "--drift-period=soon"}, []string{`invalid value "soon" for flag -drift-period`}},
		"bad discovery": {[]string{"run", "--node-name=n", "--discovery=named,pid"}, []string{
			`run: flag --discovery: invalid value "named,pid": unknown strategy "pid" (want named, cni-cache, proc-uid or proc-ip)`}},
		"discovery without proof": {[]string{"run", "--node-name=n", "--discovery=named,proc-ip"}, []string{
			`run: flag --discovery: invalid value "named,proc-ip": discovery strategies [named proc-ip]: none proves whose a namespace is`}},
		"unknown flag":   {[]string{"run", "--node=n"}, []string{"flag provided but not defined: -node"}},
		"extra argument": {[]string{"run", "--node-name=n", "now"}, []string{`run: unexpected argument "now"`}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			code, out, stderr := runCLI(c.args, "")
			if code != 2 || out != "" {
				t.Fatalf("exit %d, stdout %q; want exit 2 and nothing on stdout", code, out)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Fatalf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

func TestRunHelp(t *testing.T) {
	code, _, stderr := runCLI([]string{"run", "-h"}, "")
	if code != 0 || !strings.Contains(stderr, "Usage: istio-pod-network-controller run --node-name NODE") ||
		!strings.Contains(stderr, "-drift-period") || !strings.Contains(stderr, "-v value") {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
}

// TestRunEnvFallback: NODE_NAME satisfies --node-name; the run then fails on what comes next (no
// API server configuration here), with exit 1, not 2. The previous release's flag names still work,
// with a deprecation warning.
func TestRunEnvFallback(t *testing.T) {
	t.Setenv("NODE_NAME", "node-a")
	t.Setenv("KUBECONFIG", "/nonexistent/kubeconfig")
	for _, tc := range []struct{ metrics, health, warning string }{
		{"--metrics-bind-address", "--health-probe-bind-address", ""},
		{"--metrics-address", "--health-address", "Flag --metrics-address has been deprecated, use --metrics-bind-address instead"},
	} {
		code, _, stderr := runCLI([]string{"run", tc.metrics + "=127.0.0.1:1", tc.health + "=127.0.0.1:2"}, "")
		if code != 1 {
			t.Fatalf("%s: exit %d, want 1:\n%s", tc.metrics, code, stderr)
		}
		if tc.warning == "" && strings.Contains(stderr, "deprecated") || !strings.Contains(stderr, tc.warning) {
			t.Errorf("%s: stderr %q, want the deprecation warning %q and no other", tc.metrics, stderr, tc.warning)
		}
	}
}

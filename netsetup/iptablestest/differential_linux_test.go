package iptablestest_test

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/iptablestest"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// realRestore runs the real tool in n and returns its exit code.
func realRestore(t *testing.T, n *testutil.Netns, lock, name, input string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.Env = append(os.Environ(), "XTABLES_LOCKFILE="+lock)
	cmd.Stdin = bytes.NewBufferString(input)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return 0, string(out)
}

// differ feeds the same restore inputs to the real tool in a fresh network namespace and to the
// fake, and fails when an exit code or the saved tables differ.
func differ(t *testing.T, backend string, fam rules.Family, inputs []string, codes []int) {
	t.Helper()
	n := testutil.NewNetns(t)
	lock := filepath.Join(t.TempDir(), "xtables.lock")
	f := iptablestest.New()
	ns := f.NewNamespace("pod")
	restore, save := tool(backend, fam, "restore"), tool(backend, fam, "save")
	for i, in := range inputs {
		code, msg := realRestore(t, n, lock, restore, in, "--noflush", "--wait=10")
		_, err := ns.Run([]string{"XTABLES_LOCKFILE=" + lock}, in, restore, "--noflush", "--wait=10")
		fakeCode := 0
		var exit *iptablestest.ExitError
		if errors.As(err, &exit) {
			fakeCode = exit.Code
		} else if err != nil {
			t.Fatal(err)
		}
		if fakeCode != code {
			t.Fatalf("input %d: real %s exit %d (%s), fake %d (%v)\n%s", i, restore, code, msg, fakeCode, err, in)
		}
		if codes != nil && codes[i] != code {
			t.Fatalf("input %d: real %s exit %d (%s), the case expects %d", i, restore, code, msg, codes[i])
		}
		kernel := normalize(n.Run(t, save))
		if fake := normalize(ns.Save(backend, fam)); fake != kernel {
			t.Fatalf("input %d: saves differ\nreal:\n%s\nfake:\n%s\ninput:\n%s", i, kernel, fake, in)
		}
	}
}

// TestDifferentialRestoreCases: the fake's refusal cases against the real tools, both backends.
func TestDifferentialRestoreCases(t *testing.T) {
	testutil.RequireRoot(t)
	for _, b := range backends {
		for _, c := range restoreCases {
			t.Run(b+"/"+c.name, func(t *testing.T) {
				differ(t, b, rules.IPv4, []string{seed, c.input}, []int{0, c.exit(b)})
			})
		}
	}
}

// TestDifferentialApplierTransactions: what the applier feeds a namespace (Istio's payload for a
// fresh one, then the re-apply transaction computed from the probed state, then the transaction to
// another configuration) gives the same tables in the fake and in the kernel, per configuration,
// backend and family.
func TestDifferentialApplierTransactions(t *testing.T) {
	testutil.RequireRoot(t)
	configs := map[string]func() *rules.Config{
		"redirect": func() *rules.Config { c := rules.Default(); c.EnableIPv6 = true; return c },
		"tproxy": func() *rules.Config {
			c := rules.Default()
			c.EnableIPv6, c.InterceptionMode = true, rules.ModeTProxy
			return c
		},
		"dns-drop-excludes": func() *rules.Config {
			c := rules.Default()
			c.EnableIPv6, c.RedirectDNS, c.DropInvalid = true, true, true
			c.ExcludeInterfaces = []string{"eth9"}
			c.InboundPortsExclude = []uint16{22}
			c.OutboundPortsExclude = []uint16{9999}
			c.OutboundIPRangesExclude = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
			return c
		},
	}
	next := map[string]string{"redirect": "tproxy", "tproxy": "dns-drop-excludes", "dns-drop-excludes": "redirect"}
	for _, b := range backends {
		for name, mk := range configs {
			for _, fam := range []rules.Family{rules.IPv4, rules.IPv6} {
				t.Run(b+"/"+name+"/"+fam.String(), func(t *testing.T) {
					rs, err := rules.Generate(mk())
					if err != nil {
						t.Fatal(err)
					}
					other, err := rules.Generate(configs[next[name]]())
					if err != nil {
						t.Fatal(err)
					}
					// The probed state after the payload, as the applier parses it from the fake.
					f := iptablestest.New()
					ns := f.NewNamespace("probe")
					if err := ns.Restore(b, fam, rs.Payload(fam)); err != nil {
						t.Fatal(err)
					}
					have, err := netsetup.ParseSave(ns.Save(b, fam))
					if err != nil {
						t.Fatal(err)
					}
					inputs := []string{rs.Payload(fam), netsetup.Transaction(rs, fam, have), netsetup.Transaction(other, fam, have)}
					differ(t, b, fam, inputs, []int{0, 0, 0})
				})
			}
		}
	}
}

package netsetup

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

func newApplier(t testing.TB, b Backend) *Applier {
	t.Helper()
	testutil.RequireRoot(t)
	a, err := NewApplier(context.Background(), Options{Backend: b, LockDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func openNS(t testing.TB, n *testutil.Netns) *netns.Handle {
	t.Helper()
	h, err := netns.Open(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func tproxyConfig(ipv6 bool) *rules.Config {
	c := rules.Default()
	c.InterceptionMode = rules.ModeTProxy
	c.EnableIPv6 = ipv6
	return c
}

func redirectConfig(ipv6 bool) *rules.Config {
	c := rules.Default()
	c.EnableIPv6 = ipv6
	return c
}

var counters = regexp.MustCompile(`(?m)^#.*$|\[\d+:\d+\]`)

// liveRules is iptables-save's output for both families without comments and counters.
func liveRules(t testing.TB, n *testutil.Netns, b Backend) string {
	t.Helper()
	out := n.Run(t, binary(b, rules.IPv4, "save")) + n.Run(t, binary(b, rules.IPv6, "save"))
	return counters.ReplaceAllString(out, "")
}

var backends = []Backend{BackendNFT, BackendLegacy}

// TestApplyFreshIdempotentAndVerified applies each configuration to a fresh namespace, verifies the
// live rules, and applies again: nothing changes, also after someone ran the other backend's save.
func TestApplyFreshIdempotentAndVerified(t *testing.T) {
	configs := map[string]func(bool) *rules.Config{"redirect": redirectConfig, "tproxy": tproxyConfig}
	for _, b := range backends {
		for name, mk := range configs {
			for _, ipv6 := range []bool{false, true} {
				fam := "ipv4"
				if ipv6 {
					fam = "dual"
				}
				t.Run(string(b)+"/"+name+"/"+fam, func(t *testing.T) {
					a := newApplier(t, b)
					n := testutil.NewNetns(t)
					h := openNS(t, n)
					cfg := mk(ipv6)
					ctx := context.Background()
					res, err := a.Apply(ctx, h, "pod-a", cfg)
					if err != nil {
						t.Fatal(err)
					}
					if !res.Changed || res.Hash == "" || res.Hash == "none" {
						t.Fatalf("first apply: %+v", res)
					}
					if _, err := a.Verify(ctx, h, "pod-a", cfg); err != nil {
						t.Fatalf("verify after apply: %v", err)
					}
					before := liveRules(t, n, b)
					// Someone runs the other backend's save in the namespace (it may create empty tables).
					n.Run(t, binary(b.Other(), rules.IPv4, "save"))
					res2, err := a.Apply(ctx, h, "pod-a", cfg)
					if err != nil {
						t.Fatal(err)
					}
					if res2.Changed || res2.Hash != res.Hash {
						t.Fatalf("second apply changed something: %+v then %+v", res, res2)
					}
					if after := liveRules(t, n, b); after != before {
						t.Fatalf("live rules changed on re-apply:\nbefore:\n%s\nafter:\n%s", before, after)
					}
					checkRoutes(t, n, cfg)
				})
			}
		}
	}
}

func checkRoutes(t *testing.T, n *testutil.Netns, cfg *rules.Config) {
	t.Helper()
	rule4 := n.Run(t, "ip", "-4", "rule", "show")
	hasRule := strings.Contains(rule4, "fwmark 0x539 lookup 133")
	if want := cfg.InterceptionMode == rules.ModeTProxy; hasRule != want {
		t.Errorf("IPv4 fwmark rule present=%t, want %t:\n%s", hasRule, want, rule4)
	}
	if cfg.InterceptionMode == rules.ModeTProxy {
		if r := n.Run(t, "ip", "-4", "route", "show", "table", "133"); !strings.Contains(r, "local default dev lo") {
			t.Errorf("IPv4 table 133 lacks the local default route:\n%s", r)
		}
		if cfg.EnableIPv6 {
			if r := n.Run(t, "ip", "-6", "route", "show", "table", "133"); !strings.Contains(r, "local default dev lo") {
				t.Errorf("IPv6 table 133 lacks the local default route:\n%s", r)
			}
		}
	}
	lo := n.Run(t, "ip", "-6", "addr", "show", "dev", "lo")
	if has := strings.Contains(lo, "::6/128"); has != cfg.EnableIPv6 {
		t.Errorf("::6/128 on lo present=%t, want %t:\n%s", has, cfg.EnableIPv6, lo)
	}
}

// TestApplyReplacesWithoutLeftovers moves a namespace between configurations: each time the live
// state is exactly the new configuration's (verified), with no chain, rule or route left behind.
func TestApplyReplacesWithoutLeftovers(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			a := newApplier(t, b)
			n := testutil.NewNetns(t)
			h := openNS(t, n)
			ctx := context.Background()
			excl := redirectConfig(false)
			excl.InboundPortsExclude = append(excl.InboundPortsExclude, 8081)
			excl.ExcludeInterfaces = []string{"eth9"}
			none := rules.Default()
			none.InterceptionMode = rules.ModeNone
			steps := []*rules.Config{redirectConfig(false), tproxyConfig(false), excl, tproxyConfig(false), redirectConfig(false), none}
			for i, cfg := range steps {
				if _, err := a.Apply(ctx, h, "pod-b", cfg); err != nil {
					t.Fatalf("step %d (%s): %v", i, cfg.InterceptionMode, err)
				}
				if _, err := a.Verify(ctx, h, "pod-b", cfg); err != nil {
					t.Fatalf("step %d (%s): verify: %v", i, cfg.InterceptionMode, err)
				}
				checkRoutes(t, n, cfg)
			}
			if live := liveRules(t, n, b); strings.Contains(live, "ISTIO") || strings.Contains(live, "eth9") {
				t.Fatalf("leftovers after mode NONE:\n%s", live)
			}
		})
	}
}

// TestVerifyDetectsDriftAndApplyRepairs flushes the rules behind the applier's back.
func TestVerifyDetectsDriftAndApplyRepairs(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			a := newApplier(t, b)
			n := testutil.NewNetns(t)
			h := openNS(t, n)
			ctx := context.Background()
			cfg := redirectConfig(true)
			if _, err := a.Apply(ctx, h, "pod-c", cfg); err != nil {
				t.Fatal(err)
			}
			want := liveRules(t, n, b)
			n.Run(t, "iptables-"+string(b), "-t", "nat", "-F", "ISTIO_OUTPUT")
			if _, err := a.Verify(ctx, h, "pod-c", cfg); !errors.Is(err, ErrDrift) {
				t.Fatalf("verify after flush: %v, want ErrDrift", err)
			}
			n.Run(t, "ip", "-6", "addr", "del", "::6/128", "dev", "lo")
			if _, err := a.Verify(ctx, h, "pod-c", cfg); !errors.Is(err, ErrDrift) {
				t.Fatalf("verify without ::6: %v, want ErrDrift", err)
			}
			res, err := a.Apply(ctx, h, "pod-c", cfg)
			if err != nil || !res.Changed {
				t.Fatalf("repair: %+v, %v", res, err)
			}
			if got := liveRules(t, n, b); got != want {
				t.Fatalf("repaired rules differ:\nwant:\n%s\ngot:\n%s", want, got)
			}
			checkRoutes(t, n, cfg)
		})
	}
}

// TestForeignRules finds Istio chains installed with the other backend, and creates no legacy
// tables while looking.
func TestForeignRules(t *testing.T) {
	a := newApplier(t, BackendNFT)
	ctx := context.Background()
	n := testutil.NewNetns(t)
	h := openNS(t, n)
	if found, err := a.ForeignRules(ctx, h, "pod-d"); err != nil || found {
		t.Fatalf("fresh namespace: found=%t err=%v", found, err)
	}
	if tables := n.Run(t, "cat", "/proc/self/net/ip_tables_names"); strings.TrimSpace(tables) != "" {
		t.Fatalf("looking created legacy tables: %q", tables)
	}
	legacy := newApplier(t, BackendLegacy)
	if _, err := legacy.Apply(ctx, h, "pod-d", redirectConfig(false)); err != nil {
		t.Fatal(err)
	}
	if found, err := a.ForeignRules(ctx, h, "pod-d"); err != nil || !found {
		t.Fatalf("legacy Istio rules: found=%t err=%v", found, err)
	}
}

// TestRestoreErrorKeepsToolWords checks that a failing restore reports iptables' words and the line.
func TestRestoreErrorKeepsToolWords(t *testing.T) {
	testutil.RequireRoot(t)
	_, err := execTool(context.Background(), nil, "*nat\n-A OUTPUT --bogus-option 1 -j RETURN\nCOMMIT\n", "iptables-nft-restore", "--test")
	var ee *ExecError
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), `-A OUTPUT --bogus-option 1 -j RETURN`) {
		t.Fatalf("got %v", err)
	}
}

func TestMain(m *testing.M) {
	if helperMain() {
		return
	}
	if _, err := exec.LookPath("iptables-nft-restore"); err != nil {
		println("iptables is not installed: apt-get install iptables")
	}
	// Helpers run as unprivileged UIDs, which cannot reach the go build cache: give them a copy.
	dir, err := os.MkdirTemp("", "netsetup-test-")
	if err == nil {
		defer os.RemoveAll(dir)
		helperBinary = filepath.Join(dir, "netsetup.test")
		if err := copyFile(os.Args[0], helperBinary); err != nil || os.Chmod(dir, 0o755) != nil {
			helperBinary = os.Args[0]
		}
	}
	m.Run()
}

// helperBinary is the test binary, readable by every UID.
var helperBinary = os.Args[0]

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o755)
}

// TestDormantTableIsDrift (nft backend): an nf_tables table of ours made dormant keeps every rule
// iptables-nft-save prints, but hooks none of them. Verify reports it, naming the table and family;
// Apply wakes it; a dormant table that holds nothing of ours is not our drift.
func TestDormantTableIsDrift(t *testing.T) {
	a := newApplier(t, BackendNFT)
	ctx := context.Background()
	cfg := redirectConfig(true)
	for _, fam := range []struct{ nft, want string }{{"ip", "ipv4: table nat: dormant true"}, {"ip6", "ipv6: table nat: dormant true"}} {
		t.Run(fam.nft, func(t *testing.T) {
			n := testutil.NewNetns(t)
			h := openNS(t, n)
			if _, err := a.Apply(ctx, h, "pod-d", cfg); err != nil {
				t.Fatal(err)
			}
			want := liveRules(t, n, BackendNFT)
			n.Run(t, "nft", "add", "table", fam.nft, "other", "{", "flags", "dormant", ";", "}")
			if _, err := a.Verify(ctx, h, "pod-d", cfg); err != nil {
				t.Fatalf("verify with a dormant table of nothing of ours: %v", err)
			}
			n.Run(t, "nft", "add", "table", fam.nft, "nat", "{", "flags", "dormant", ";", "}")
			if got := liveRules(t, n, BackendNFT); got != want {
				t.Fatalf("iptables-nft-save changed when the table went dormant (the test's premise):\n%s", got)
			}
			_, err := a.Verify(ctx, h, "pod-d", cfg)
			if !errors.Is(err, ErrDrift) || !strings.Contains(err.Error(), fam.want) {
				t.Fatalf("verify with a dormant nat table: %v, want ErrDrift naming %q", err, fam.want)
			}
			if res, err := a.Apply(ctx, h, "pod-d", cfg); err != nil || !res.Changed {
				t.Fatalf("repair: %+v, %v", res, err)
			}
			if out := n.Run(t, "nft", "list", "table", fam.nft, "nat"); strings.Contains(out, "dormant") {
				t.Fatalf("still dormant after the repair:\n%s", out)
			}
			if _, err := a.Verify(ctx, h, "pod-d", cfg); err != nil {
				t.Fatalf("verify after the repair: %v", err)
			}
			if got := liveRules(t, n, BackendNFT); got != want {
				t.Fatalf("repaired rules differ:\nwant:\n%s\ngot:\n%s", want, got)
			}
		})
	}
}

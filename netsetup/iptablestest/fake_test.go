package iptablestest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/iptablestest"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

var backends = []string{iptablestest.NFT, iptablestest.Legacy}

func tool(backend string, fam rules.Family, t string) string {
	p := "iptables"
	if fam == rules.IPv6 {
		p = "ip6tables"
	}
	return p + "-" + backend + "-" + t
}

var (
	counters = regexp.MustCompile(`\[\d+:\d+\]`)
	emptyBI  = regexp.MustCompile(`^:[A-Z]+ ACCEPT \[0:0\]$`)
)

// normalize makes two saves comparable: comments dropped, counters zeroed, tables sorted by name,
// and tables holding nothing (only built-in chains, ACCEPT, no rule) left out, since which empty
// tables exist depends on what touched them before.
func normalize(save string) string {
	var blocks []string
	var cur []string
	empty := true
	for _, line := range strings.Split(save, "\n") {
		line = counters.ReplaceAllString(line, "[0:0]")
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "*"):
			cur, empty = []string{line}, true
			continue
		}
		cur = append(cur, line)
		if line == "COMMIT" {
			if !empty {
				blocks = append(blocks, strings.Join(cur, "\n"))
			}
			continue
		}
		if !emptyBI.MatchString(line) {
			empty = false
		}
	}
	slices.Sort(blocks)
	return strings.Join(blocks, "\n")
}

// seeded returns a fake namespace holding the cases' seed.
func seeded(t *testing.T, backend string) (*iptablestest.Fake, *iptablestest.Namespace) {
	t.Helper()
	f := iptablestest.New()
	ns := f.NewNamespace("pod")
	if err := ns.Restore(backend, rules.IPv4, seed); err != nil {
		t.Fatal(err)
	}
	return f, ns
}

func lockEnv(t *testing.T) []string {
	return []string{"XTABLES_LOCKFILE=" + filepath.Join(t.TempDir(), "xtables.lock")}
}

// TestRestoreRefusesWhatTheRealOneRefuses: every case gives the real tools' exit code (the
// differential test checks the codes and the resulting saves against the real tools), and a
// refused table changes nothing.
func TestRestoreRefusesWhatTheRealOneRefuses(t *testing.T) {
	for _, b := range backends {
		for _, c := range restoreCases {
			t.Run(b+"/"+c.name, func(t *testing.T) {
				_, ns := seeded(t, b)
				before := ns.Save(b, rules.IPv4)
				_, err := ns.Run(lockEnv(t), c.input, tool(b, rules.IPv4, "restore"), "--noflush", "--wait=10")
				code := 0
				var exit *iptablestest.ExitError
				if errors.As(err, &exit) {
					code = exit.Code
				} else if err != nil {
					t.Fatal(err)
				}
				if code != c.exit(b) {
					t.Fatalf("exit code %d (%v), want %d", code, err, c.exit(b))
				}
				after := normalize(ns.Save(b, rules.IPv4))
				switch {
				case code != 0 && c.name == "second table fails, first stays":
					if !strings.Contains(after, ":ISTIO_M - [0:0]") || !strings.Contains(after, "-A ISTIO_A -j RETURN") {
						t.Fatalf("want mangle committed and nat unchanged:\n%s", after)
					}
				case code != 0 && after != normalize(before):
					t.Fatalf("a refused transaction changed the tables:\nbefore:\n%s\nafter:\n%s", before, after)
				}
			})
		}
	}
}

func TestSaveIsCanonical(t *testing.T) {
	want, err := os.ReadFile("testdata/canonical-forms.save") // iptables-nft-save v1.8.9's output
	if err != nil {
		t.Fatal(err)
	}
	var input string
	for _, c := range restoreCases {
		if c.name == "canonical forms" {
			input = c.input
		}
	}
	for _, b := range backends {
		_, ns := seeded(t, b)
		if err := ns.Restore(b, rules.IPv4, input); err != nil {
			t.Fatal(err)
		}
		if got := normalize(ns.Save(b, rules.IPv4)); got != normalize(string(want)) {
			t.Errorf("%s save:\n%s\nwant:\n%s", b, got, normalize(string(want)))
		}
	}
}

// TestFullRestoreReplacesTheTable: without --noflush a table named in the input is replaced whole.
func TestFullRestoreReplacesTheTable(t *testing.T) {
	_, ns := seeded(t, iptablestest.NFT)
	if _, err := ns.Run(nil, "*nat\n:ISTIO_B - [0:0]\nCOMMIT\n", "iptables-nft-restore"); err != nil {
		t.Fatal(err)
	}
	got := normalize(ns.Save(iptablestest.NFT, rules.IPv4))
	if strings.Contains(got, "ISTIO_A") || !strings.Contains(got, ":ISTIO_B - [0:0]") {
		t.Fatalf("full restore kept the old chains:\n%s", got)
	}
}

// TestLegacyRestoreWaitsForTheLock: a held xtables lock makes legacy restore fail with exit code 4
// and iptables' message, nft ignores it.
func TestLegacyRestoreWaitsForTheLock(t *testing.T) {
	env := lockEnv(t)
	path := strings.TrimPrefix(env[0], "XTABLES_LOCKFILE=")
	held, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := unix.Flock(int(held.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	f := iptablestest.New()
	_, err = f.Run(context.Background(), env, seed, "iptables-legacy-restore", "--noflush", "--wait=10")
	var exit *iptablestest.ExitError
	if !errors.As(err, &exit) || exit.Code != 4 || !strings.Contains(exit.Stderr, "xtables lock") {
		t.Fatalf("legacy restore under a held lock: %v", err)
	}
	if _, err := f.Run(context.Background(), env, seed, "iptables-nft-restore", "--noflush", "--wait=10"); err != nil {
		t.Fatalf("nft restore under a held lock: %v", err)
	}
	_ = unix.Flock(int(held.Fd()), unix.LOCK_UN)
	if _, err := f.Run(context.Background(), env, seed, "iptables-legacy-restore", "--noflush", "--wait=10"); err != nil {
		t.Fatalf("legacy restore after the lock was released: %v", err)
	}
}

// TestToolsRunInTheCurrentNamespace: runs outside Do go to the host, inside Do to that namespace,
// in Scratch to a fresh one; a removed backend's tools are missing executables.
func TestToolsRunInTheCurrentNamespace(t *testing.T) {
	f := iptablestest.New()
	pod := f.NewNamespace("pod")
	ctx := context.Background()
	if _, err := f.Run(ctx, nil, seed, "iptables-nft-restore", "--noflush"); err != nil {
		t.Fatal(err)
	}
	err := pod.Do(func() error {
		out, err := f.Run(ctx, nil, "", "iptables-nft-save")
		if err == nil && out != "" {
			t.Errorf("pod namespace sees the host's rules:\n%s", out)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.Scratch(func() (string, error) { return f.Run(ctx, nil, "", "iptables-nft-save") })
	if err != nil || out != "" {
		t.Fatalf("scratch namespace not empty: %q %v", out, err)
	}
	if !strings.Contains(f.Host().Save(iptablestest.NFT, rules.IPv4), ":ISTIO_A - [0:0]") {
		t.Fatal("host lost its rules")
	}
	f.RemoveBackend(iptablestest.Legacy)
	if _, err := f.Run(ctx, nil, "", "iptables-legacy-save"); !errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("removed backend: %v", err)
	}
	if got := len(f.Calls()); got != 4 {
		t.Fatalf("%d calls recorded, want 4", got)
	}
}

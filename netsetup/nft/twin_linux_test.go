package nft

import (
	"context"
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

func openNS(t testing.TB, n *testutil.Netns) *netns.Handle {
	t.Helper()
	h, err := netns.Open(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// liveState reads our tables in n over netlink.
func liveState(t testing.TB, h *netns.Handle) State {
	t.Helper()
	var st State
	err := h.Do(func() error {
		nc, err := dial()
		if err != nil {
			return err
		}
		defer nc.Close()
		st, err = readState(nc)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

var nftCounters = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// listTables is `nft list table` of each of our tables that exists, counters stripped.
func listTables(t testing.TB, n *testutil.Netns) string {
	t.Helper()
	var out strings.Builder
	existing := n.Run(t, "nft", "list", "tables", "inet")
	for _, name := range ourTables {
		if strings.Contains(existing, "table inet "+name+"\n") {
			out.WriteString(n.Run(t, "nft", "list", "table", "inet", name))
		}
	}
	return nftCounters.ReplaceAllString(out.String(), "counter")
}

// requireNft skips without the nft binary (the twin's reference), unless CI is set.
func requireNft(t testing.TB) {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nft binary missing (apt package nftables): the twin comparison needs it")
		}
		t.Skip("nft binary missing (apt package nftables)")
	}
}

// numericGroups replaces the owner-group names of the owner-group goldens with numbers, in the
// configuration and in Istio's text alike: nft resolves names in its own /etc/group, our netlink
// path takes numeric GIDs only (TestGroupNamesRefused).
var numericGroups = strings.NewReplacer("skgid java", "skgid 4242", "skgid != java", "skgid != 4242",
	"skgid ftp", "skgid 4243", "skgid != ftp", "skgid != 4243")

func numeric(cfg *rules.Config) *rules.Config {
	c := *cfg
	c.OwnerGroups.Groups = nil
	for _, g := range cfg.OwnerGroups.Groups {
		c.OwnerGroups.Groups = append(c.OwnerGroups.Groups, map[string]string{"java": "4242", "ftp": "4243"}[g]+
			strings.TrimLeft(g, "abcdefghijklmnopqrstuvwxyz"))
	}
	return &c
}

// TestTwinGoldens programs each golden case twice: Istio's text through `nft -f` in one namespace,
// our model through the netlink batch in a twin. The rules read back over netlink and `nft list
// table` must be the same; our Verify must accept Istio's namespace; re-applying writes nothing.
func TestTwinGoldens(t *testing.T) {
	requireNft(t)
	a := NewApplier()
	ctx := context.Background()
	for _, c := range loadCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			cfg := numeric(c.Config)
			text := numericGroups.Replace(golden(t, c))
			istio, ours := testutil.NewNetns(t), testutil.NewNetns(t)
			path := filepath.Join(t.TempDir(), "istio.nft")
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			istio.Run(t, "nft", "-f", path)
			hi, ho := openNS(t, istio), openNS(t, ours)
			res, err := a.Apply(ctx, ho, "twin", cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Changed {
				t.Error("first apply reported no change")
			}
			if ok, diff := liveState(t, hi).Equal(liveState(t, ho)); !ok {
				t.Fatalf("netlink read-back differs from Istio's nft -f: %s", diff)
			}
			if li, lo := listTables(t, istio), listTables(t, ours); li != lo {
				t.Fatalf("nft list table differs:\nIstio's:\n%s\nours:\n%s", li, lo)
			}
			rs, err := Generate(cfg)
			if err != nil {
				t.Fatal(err)
			}
			want, err := a.canonical(rs)
			if err != nil {
				t.Fatal(err)
			}
			if ok, diff := want.Equal(liveState(t, hi)); !ok {
				t.Fatalf("our model does not accept Istio's namespace: %s", diff)
			}
			if res, err = a.Apply(ctx, ho, "twin", cfg); err != nil || res.Changed {
				t.Fatalf("re-apply: changed=%v err=%v, want a no-op", res.Changed, err)
			}
			if _, err := a.Verify(ctx, ho, "twin", cfg); err != nil {
				t.Fatal(err)
			}
		})
	}
}

package nft

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// TestBatchIsAtomic: a batch the kernel refuses (its last rule jumps to a chain that does not
// exist) fails with the kernel's error and changes nothing: the rules programmed before stay as
// they were, and the tables the batch would have replaced are untouched.
func TestBatchIsAtomic(t *testing.T) {
	testutil.RequireRoot(t)
	a, ctx := NewApplier(), context.Background()
	n := testutil.NewNetns(t)
	h := openNS(t, n)
	cfg := rules.Default()
	if _, err := a.Apply(ctx, h, "pod", cfg); err != nil {
		t.Fatal(err)
	}
	before := liveState(t, h)
	rs, err := Generate(config(rules.ModeTProxy, true))
	if err != nil {
		t.Fatal(err)
	}
	out := rs.Table(TableNat).Chains[len(rs.Table(TableNat).Chains)-1]
	out.Rules = append(out.Rules, Rule{ctr, jump("no-such-chain")})
	err = h.Do(func() error {
		nc, err := dial()
		if err != nil {
			return err
		}
		defer nc.Close()
		return writeTables(nc, rs, map[string]bool{TableNat: true})
	})
	if !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("batch with a jump to a missing chain: %v, want the kernel's ENOENT", err)
	}
	if ok, diff := before.Equal(liveState(t, h)); !ok {
		t.Fatalf("a refused batch changed the namespace: %s", diff)
	}
	if _, err := a.Verify(ctx, h, "pod", cfg); err != nil {
		t.Fatalf("the earlier rules no longer verify: %v", err)
	}
}

// TestLargeRuleSet: a rule set whose dumps span many netlink reads (300 excluded ranges, 200
// excluded ports) applies, reads back equal and re-applies as a no-op.
func TestLargeRuleSet(t *testing.T) {
	testutil.RequireRoot(t)
	a, ctx := NewApplier(), context.Background()
	cfg := config(rules.ModeRedirect, true)
	for i := 0; i < 300; i++ {
		cfg.OutboundIPRangesExclude = append(cfg.OutboundIPRangesExclude, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24))
	}
	for p := uint16(20000); p < 20200; p++ {
		cfg.OutboundPortsExclude = append(cfg.OutboundPortsExclude, p)
	}
	h := openNS(t, testutil.NewNetns(t))
	if res, err := a.Apply(ctx, h, "pod", cfg); err != nil || !res.Changed {
		t.Fatalf("apply: changed=%v err=%v", res.Changed, err)
	}
	if res, err := a.Apply(ctx, h, "pod", cfg); err != nil || res.Changed {
		t.Fatalf("re-apply: changed=%v err=%v", res.Changed, err)
	}
}

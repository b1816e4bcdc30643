package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/nft"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// Compile-time checks that the real implementations fit the controller's interfaces.
var (
	_ Namespace          = (*netns.Handle)(nil)
	_ netsetup.Namespace = Namespace(nil)
	_ Finder             = NetnsFinder{}
	_ Applier            = NetsetupApplier{}
	_ LiveReader         = NetsetupApplier{}
	_ Applier            = NftApplier{}
	_ NftablesLister     = NftApplier{}
)

// NetnsFinder adapts *netns.Finder to Finder.
type NetnsFinder struct{ *netns.Finder }

// Find returns the pod's namespace (see netns.Finder.Find).
func (f NetnsFinder) Find(ctx context.Context, podUID string, podIPs []netip.Addr) (Namespace, error) {
	h, err := f.Finder.Find(ctx, podUID, podIPs)
	if err != nil {
		return nil, err // never a typed nil inside the interface
	}
	return h, nil
}

// NetsetupApplier adapts *netsetup.Applier to Applier and LiveReader.
type NetsetupApplier struct{ *netsetup.Applier }

// Apply programs ns (see netsetup.Applier.Apply).
func (a NetsetupApplier) Apply(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (netsetup.Result, error) {
	return a.Applier.Apply(ctx, ns, key, cfg)
}

// Verify checks ns (see netsetup.Applier.Verify).
func (a NetsetupApplier) Verify(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (netsetup.Result, error) {
	return a.Applier.Verify(ctx, ns, key, cfg)
}

// Foreign looks for ISTIO_* chains in the other iptables backend (see
// netsetup.Applier.ForeignRules).
func (a NetsetupApplier) Foreign(ctx context.Context, ns Namespace, key string) (string, error) {
	found, err := a.Applier.ForeignRules(ctx, ns, key)
	if err != nil {
		return "", fmt.Errorf("look for rules in the other iptables backend: %w", err)
	}
	if !found {
		return "", nil
	}
	return fmt.Sprintf("network namespace %s already holds ISTIO_* chains in the other iptables backend: two rule sets would both be live "+
		"(is istio-init or Istio's CNI also programming this pod?)", ns.Path()), nil
}

// Programmed reports whether ns holds any rules of ours in the IPv4 tables (every programmed rule
// set has IPv4 rules).
func (a NetsetupApplier) Programmed(ctx context.Context, ns Namespace, key string) (bool, error) {
	live, err := a.Applier.Live(ctx, ns, key, []rules.Family{rules.IPv4})
	if err != nil {
		return false, err
	}
	st, err := netsetup.ParseSave(live[rules.IPv4])
	if err != nil {
		return false, fmt.Errorf("network namespace %s: %w", ns.Path(), err)
	}
	return !st.Empty(), nil
}

// Live returns iptables-save's output per family in ns (see netsetup.Applier.Live).
func (a NetsetupApplier) Live(ctx context.Context, ns Namespace, key string, families []rules.Family) (map[rules.Family]string, error) {
	return a.Applier.Live(ctx, ns, key, families)
}

// NftApplier adapts *nft.Applier (Istio's native nftables rules over netlink) to Applier and
// NftablesLister.
type NftApplier struct{ *nft.Applier }

// Apply programs ns (see nft.Applier.Apply), which looks for iptables rules first in the same
// entry into ns: a namespace holding any fails with a *ForeignRulesError.
func (a NftApplier) Apply(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (netsetup.Result, error) {
	res, err := a.Applier.Apply(ctx, ns, key, cfg)
	if fe := (*nft.ForeignError)(nil); errors.As(err, &fe) {
		return res, &ForeignRulesError{Reason: nftForeignReason(ns, fe.Reason)}
	}
	return res, err
}

// Verify checks ns (see nft.Applier.Verify).
func (a NftApplier) Verify(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (netsetup.Result, error) {
	return a.Applier.Verify(ctx, ns, key, cfg)
}

// Programmed reports whether ns holds any of our nftables tables (see nft.Applier.Programmed).
func (a NftApplier) Programmed(ctx context.Context, ns Namespace, key string) (bool, error) {
	return a.Applier.Programmed(ctx, ns, key)
}

// NftablesLive lists our inet tables in ns, cfg's rules as nft text and any other rule as a
// marker (see nft.Applier.Live). It changes nothing.
func (a NftApplier) NftablesLive(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (string, error) {
	return a.Applier.Live(ctx, ns, key, cfg)
}

// Foreign returns "": Apply looks for iptables rules of either iptables backend itself, in the
// same entry into the namespace as the batch (one entry and one socket per pod instead of two),
// and refuses with a *ForeignRulesError. nft.Applier.Foreign is the same check on its own.
func (a NftApplier) Foreign(ctx context.Context, ns Namespace, key string) (string, error) {
	return "", nil
}

func nftForeignReason(ns Namespace, reason string) string {
	return fmt.Sprintf("network namespace %s: %s (two rule sets would both be live: is istio-init, Istio's CNI or the iptables backend also programming this pod?)", ns.Path(), reason)
}

// ForeignRulesError is an Apply that found rules of another backend, which would run alongside
// ours, and wrote nothing: the pod is refused with Reason, as when Foreign returns it.
type ForeignRulesError struct{ Reason string }

func (e *ForeignRulesError) Error() string { return e.Reason }

// Forget does nothing: nf_tables transactions need no per-pod lock file.
func (a NftApplier) Forget(string) {}

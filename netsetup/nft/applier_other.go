//go:build !linux

package nft

import (
	"context"
	"errors"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

var errUnsupported = errors.New("nftables backend: Linux only")

// Applier is Linux only.
type Applier struct{}

// NewApplier returns an Applier whose operations fail.
func NewApplier() *Applier { return &Applier{} }

func (a *Applier) Apply(context.Context, netsetup.Namespace, string, *rules.Config) (netsetup.Result, error) {
	return netsetup.Result{}, errUnsupported
}

func (a *Applier) Verify(context.Context, netsetup.Namespace, string, *rules.Config) (netsetup.Result, error) {
	return netsetup.Result{}, errUnsupported
}

func (a *Applier) Programmed(context.Context, netsetup.Namespace, string) (bool, error) {
	return false, errUnsupported
}

func (a *Applier) ForeignRules(context.Context, netsetup.Namespace, string) (bool, error) {
	return false, errUnsupported
}

func (a *Applier) Foreign(netsetup.Namespace) (string, error) { return "", errUnsupported }

func (a *Applier) Live(context.Context, netsetup.Namespace, string, *rules.Config) (string, error) {
	return "", errUnsupported
}

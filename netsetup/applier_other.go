//go:build !linux

package netsetup

import (
	"context"
	"errors"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

var errUnsupported = errors.New("programming network namespaces needs Linux")

// Applier programs network namespaces (Linux only).
type Applier struct{}

// NewApplier fails: Linux only.
func NewApplier(context.Context, Options) (*Applier, error) { return nil, errUnsupported }

func (a *Applier) Backend() Backend { return "" }
func (a *Applier) Forget(string)    {}
func (a *Applier) Apply(context.Context, Namespace, string, *rules.Config) (Result, error) {
	return Result{}, errUnsupported
}
func (a *Applier) Verify(context.Context, Namespace, string, *rules.Config) (Result, error) {
	return Result{}, errUnsupported
}
func (a *Applier) ForeignRules(context.Context, Namespace, string) (bool, error) {
	return false, errUnsupported
}
func (a *Applier) Live(context.Context, Namespace, string, []rules.Family) (map[rules.Family]string, error) {
	return nil, errUnsupported
}

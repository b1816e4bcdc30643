//go:build !linux

package kubelet

import (
	"errors"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

var errUnsupported = errors.New("kubelet: the simulator needs Linux (network namespaces, veths, cgroups)")

// network is Linux only.
type network struct{}

func newNetwork(Options, netip.Prefix, netip.Prefix) (*network, error) { return nil, errUnsupported }
func (n *network) create(*sandbox, bool, string) error                 { return errUnsupported }
func (n *network) destroy(*sandbox)                                    {}
func (n *network) close() error                                        { return nil }
func startProc(procSpec) (*proc, error)                                { return nil, errUnsupported }
func (p *proc) kill()                                                  {}

func (k *Kubelet) makePodCgroups(*corev1.Pod) ([]string, error) { return nil, errUnsupported }

//go:build !linux

package netns

import (
	"context"
	"net/netip"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// Handle is an open network namespace (Linux only; see the Linux documentation).
type Handle struct{}

// Open fails with ErrUnsupported.
func Open(path string) (*Handle, error) { return nil, ErrUnsupported }

// OpenFDs returns 0.
func OpenFDs() int64 { return 0 }

// Path returns "".
func (h *Handle) Path() string { return "" }

// Inode returns 0.
func (h *Handle) Inode() uint64 { return 0 }

// Key returns the zero Key.
func (h *Handle) Key() Key { return Key{} }

// Same returns false.
func (h *Handle) Same(o *Handle) bool { return false }

// Fd returns ^uintptr(0).
func (h *Handle) Fd() uintptr { return ^uintptr(0) }

// Source returns "".
func (h *Handle) Source() Strategy { return "" }

// Proof returns the zero Proof.
func (h *Handle) Proof() Proof { return Proof{} }

// PodAddrs fails with ErrUnsupported.
func (h *Handle) PodAddrs() ([]netip.Addr, error) { return nil, ErrUnsupported }

// Do fails with ErrUnsupported.
func (h *Handle) Do(fn func() error) error { return ErrUnsupported }

// ID fails with ErrUnsupported.
func (h *Handle) ID() (contract.NetnsID, error) { return contract.NetnsID{}, ErrUnsupported }

// Addrs fails with ErrUnsupported.
func (h *Handle) Addrs() ([]netip.Addr, error) { return nil, ErrUnsupported }

// Close does nothing.
func (h *Handle) Close() error { return nil }

// Finder finds pods' network namespaces (Linux only).
type Finder struct{}

// New validates opts, then fails with ErrUnsupported.
func New(opts Options) (*Finder, error) {
	if _, err := opts.withDefaults(); err != nil {
		return nil, err
	}
	return nil, ErrUnsupported
}

// HostID returns the zero NetnsID.
func (f *Finder) HostID() contract.NetnsID { return contract.NetnsID{} }

// IsHost returns false.
func (f *Finder) IsHost(h *Handle) bool { return false }

// Find fails with ErrUnsupported.
func (f *Finder) Find(ctx context.Context, podUID string, podIPs []netip.Addr) (*Handle, error) {
	return nil, ErrUnsupported
}

// Forget does nothing.
func (f *Finder) Forget(podUID string) {}

// Cached returns 0.
func (f *Finder) Cached() int { return 0 }

// Proofs returns 0.
func (f *Finder) Proofs() int { return 0 }

// Close does nothing.
func (f *Finder) Close() error { return nil }

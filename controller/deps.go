package controller

import (
	"context"
	"net/netip"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// The controller's view of its side effects: small interfaces, defined here at the consumer, so the
// reconcile logic runs against fakes in unit tests. adapters.go binds them to packages netns and
// netsetup.

// Namespace is an open network namespace of a pod, held by file descriptor.
type Namespace interface {
	// Do runs fn inside the namespace on a locked OS thread.
	Do(fn func() error) error
	// Path names the namespace in messages.
	Path() string
	// ID is the namespace's identity for the netns annotation (SO_NETNS_COOKIE, or the inode).
	ID() (contract.NetnsID, error)
	// Addrs lists the addresses of every interface in the namespace, read live: once the
	// namespace is proven to be the pod's, they are the pod's addresses.
	Addrs() ([]netip.Addr, error)
	// Close releases the handle.
	Close() error
}

// Finder finds the network namespace of a pod, proven to be that pod's by node-local evidence;
// podIPs are only a hint. Errors wrap netns.ErrNotFound, netns.ErrNotProven, netns.ErrShared,
// netns.ErrAmbiguous or netns.ErrHostNamespace.
type Finder interface {
	Find(ctx context.Context, podUID string, podIPs []netip.Addr) (Namespace, error)
	// Forget drops the cached namespace of a pod (closing its fd).
	Forget(podUID string)
}

// Applier programs and checks the redirect rules in a namespace. key is the pod UID (it names the
// per-pod xtables lock file); callers serialize operations on one pod.
type Applier interface {
	// Apply makes ns hold exactly the rules and routes of cfg and checks them by reading back.
	Apply(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (netsetup.Result, error)
	// Verify checks that ns holds exactly the rules and routes of cfg; a difference wraps
	// netsetup.ErrDrift.
	Verify(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (netsetup.Result, error)
	// Programmed reports whether ns holds any rules of ours at all.
	Programmed(ctx context.Context, ns Namespace, key string) (bool, error)
	// Foreign returns why ns must not be programmed because it holds rules that would run
	// alongside ours (ISTIO_* chains in the other iptables backend, the other rules backend's
	// tables), or "" when it holds none.
	Foreign(ctx context.Context, ns Namespace, key string) (string, error)
	// Forget removes the pod's lock file (the pod is gone).
	Forget(key string)
}

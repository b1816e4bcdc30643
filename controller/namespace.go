package controller

import (
	"errors"
	"fmt"
	"slices"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
)

// Event reasons.
const (
	EventProgrammed               = "Programmed"               // Normal: namespace programmed, pod released
	EventSandboxRecreated         = "SandboxRecreated"         // Normal: a new namespace proven to be a released pod's
	EventPending                  = "Pending"                  // Warning: transient problem, retrying
	EventCheckFailed              = "CheckFailed"              // Warning: a released pod's namespace could not be checked
	EventInvalidConfiguration     = "InvalidConfiguration"     // Warning: refused (failed)
	EventConflictingInitContainer = "ConflictingInitContainer" // Warning: refused (failed)
	EventForeignRules             = "ForeignRules"             // Warning: refused (failed)
	EventDriftRepaired            = "DriftRepaired"            // Warning: live rules restored
	EventSpecChanged              = "SpecChanged"              // Warning: configuration edited after release
)

// Reasons of the errors_total metric.
const (
	reasonInvalidConfig = "invalid_configuration"
	reasonTooLarge      = "configuration_too_large"
	reasonConflict      = "conflicting_init_container"
	reasonForeign       = "foreign_rules"
	reasonConfig        = "config"
	reasonNotFound      = "namespace_not_found"
	reasonNotProven     = "namespace_not_proven"
	reasonShared        = "namespace_shared"
	reasonClaimed       = "namespace_claimed"
	reasonAddrs         = "namespace_addresses"
	reasonAmbiguous     = "namespace_ambiguous"
	reasonHostNamespace = "host_namespace"
	reasonDiscovery     = "discovery"
	reasonIdentity      = "netns_identity"
	reasonForeignCheck  = "foreign_rules_check"
	reasonApply         = "apply"
	reasonLocked        = "xtables_lock"
	reasonVerify        = "verify"
	reasonPatch         = "patch"
)

// errorReasons lists every reason of errors_total (exported at 0 from the start).
var errorReasons = []string{reasonInvalidConfig, reasonTooLarge, reasonConflict, reasonForeign, reasonConfig,
	reasonNotFound, reasonNotProven, reasonShared, reasonClaimed, reasonAddrs, reasonAmbiguous, reasonHostNamespace,
	reasonDiscovery, reasonIdentity, reasonForeignCheck, reasonApply, reasonLocked, reasonVerify, reasonPatch, reasonRecord}

// ErrClaimed: the namespace found for a pod is claimed by another live pod released into it.
var ErrClaimed = errors.New("network namespace claimed by another pod")

// stepError is a failed step of open with its errors_total reason.
type stepError struct {
	metric string
	err    error
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// reasonOf returns the errors_total reason of an error of open.
func reasonOf(err error) string {
	if se, ok := errors.AsType[*stepError](err); ok {
		return se.metric
	}
	return reasonDiscovery
}

// open returns the pod's namespace, proven to be the pod's by the finder and claimed by no other
// pod, and its identity; it makes the pod's addresses those the namespace holds (the API's podIPs
// were only the hint given to the finder) and re-evaluates the configuration for them. Nothing is
// read from or written to a namespace before open returned it.
func (r *podRun) open() (Namespace, contract.NetnsID, error) {
	ns, err := r.find()
	if err != nil {
		return nil, contract.NetnsID{}, &stepError{findReason(err), err}
	}
	id, err := ns.ID()
	if err != nil {
		ns.Close()
		return nil, contract.NetnsID{}, &stepError{reasonIdentity, err}
	}
	if o, ok := r.c.claims.owner(id.String()); ok && o.uid != r.pod.UID {
		ns.Close()
		return nil, contract.NetnsID{}, &stepError{reasonClaimed, fmt.Errorf(
			"%w: network namespace %s (%s), which the finder returned for this pod's IPs %v, is pod %s's, released into it: "+
				"not touched (is this pod's status.podIPs another pod's IP?)", ErrClaimed, id, ns.Path(), podconfig.PodIPs(r.pod), o)}
	}
	hint := r.hint()
	held, err := ns.Addrs()
	if err != nil {
		ns.Close()
		return nil, contract.NetnsID{}, &stepError{reasonAddrs, fmt.Errorf("read the pod's addresses: %w", err)}
	}
	ips := podAddrs(hint, held)
	if len(ips) == 0 {
		ns.Close()
		return nil, contract.NetnsID{}, &stepError{reasonAddrs, fmt.Errorf(
			"network namespace %s (%s), proven to be the pod's, holds none of status.podIPs %v (it holds %v)", id, ns.Path(), hint, held)}
	}
	if !slices.Equal(ips, hint) {
		r.logger().V(2).Info("Pod addresses taken from its namespace", "podIPs", hint, "namespace", ips)
		r.sp = evaluate(r.pod, ips, r.backend)
	}
	r.ns = ns
	return ns, id, nil
}

// find asks the finder for the pod's namespace. When the wait container runs again for a released
// pod, a new sandbox may exist that the finder's cache does not know: the cache entry is dropped
// first.
func (r *podRun) find() (Namespace, error) {
	c := r.c
	if id := waitRunning(r.pod, c.waitContainer); id != r.st.waitContainerID {
		if id != "" && r.cur.status() == contract.StatusReady {
			r.logger().V(2).Info("Wait container running again: looking for a new network namespace", "container", id)
			c.finder.Forget(r.key())
		}
		r.st.waitContainerID = id
	}
	r.localRecreated()
	start := c.now()
	ns, err := c.finder.Find(r.ctx, r.key(), r.hint())
	c.metrics.DiscoveryDuration.Observe(c.now().Sub(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("find the pod's network namespace: %w", err)
	}
	return ns, nil
}

func findReason(err error) string {
	switch {
	case errors.Is(err, netns.ErrNotFound):
		return reasonNotFound
	case errors.Is(err, netns.ErrNotProven):
		return reasonNotProven
	case errors.Is(err, netns.ErrShared):
		return reasonShared
	case errors.Is(err, netns.ErrAmbiguous):
		return reasonAmbiguous
	case errors.Is(err, netns.ErrHostNamespace):
		return reasonHostNamespace
	}
	return reasonDiscovery
}

func applyReason(err error) string {
	if errors.Is(err, netsetup.ErrLocked) {
		return reasonLocked
	}
	return reasonApply
}

// Package contract is the annotation contract between the node controller, which programs a pod's
// network namespace and annotates the pod, and the unprivileged wait container, which reads those
// annotations from a downward-API file. Both binaries import it; it imports no Kubernetes, iptables
// or netlink code so the wait binary stays small.
package contract

import (
	"fmt"
	"strconv"
	"strings"
)

// Prefix is the prefix of every annotation the controller owns. Nobody else may set them (the chart's
// admission policy enforces it).
const Prefix = "pod-network-controller.istio.io/"

// Annotation keys written by the controller, in one merge patch through pods/status.
const (
	// KeyStatus is pending, ready or failed.
	KeyStatus = Prefix + "status"
	// KeyNetns identifies the network namespace that was programmed (see NetnsID).
	KeyNetns = Prefix + "netns"
	// KeyRules is a short hash of the complete programmed state, or RulesNone.
	KeyRules = Prefix + "rules"
	// KeyFamilies lists the address families programmed: FamiliesIPv4 or FamiliesDual.
	KeyFamilies = Prefix + "families"
	// KeyReason is a human-readable cause for failed, and for pending when something is wrong.
	KeyReason = Prefix + "reason"
	// KeyBackend is the rules backend a ready pod was released with: BackendNftables, or absent
	// for BackendIPTables (so pods released by versions without this key read as iptables, and
	// an iptables pod's annotations are what they always were). The wait container ignores it:
	// its self-test is the same for both backends, and it reads only the keys it knows.
	KeyBackend = Prefix + "backend"
)

// Keys lists every key the controller owns, in a fixed order.
var Keys = []string{KeyStatus, KeyNetns, KeyRules, KeyFamilies, KeyReason, KeyBackend}

// Backend is the rules backend that programs a pod: Istio's iptables rules or its native nftables
// rules (Istio's values.global.nativeNftables).
type Backend string

// Backends.
const (
	BackendIPTables Backend = "iptables"
	BackendNftables Backend = "nftables"
)

// ParseBackend parses a backend name (the controller's --rules-backend flag).
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(s); b {
	case BackendIPTables, BackendNftables:
		return b, nil
	}
	return "", fmt.Errorf("rules backend %q: want %s or %s", s, BackendIPTables, BackendNftables)
}

// RecordedBackend returns the backend the annotations ann record: KeyBackend absent is iptables
// (released by a version without it); the only value written is BackendNftables.
func RecordedBackend(ann map[string]string) (Backend, error) {
	v, ok := ann[KeyBackend]
	switch {
	case !ok:
		return BackendIPTables, nil
	case Backend(v) == BackendNftables:
		return BackendNftables, nil
	}
	return "", fmt.Errorf("annotation %s=%q: want %s or no annotation (%s)", KeyBackend, v, BackendNftables, BackendIPTables)
}

// Status values of KeyStatus.
type Status string

const (
	// StatusPending: the controller is working on the pod, or hit a transient problem; keep waiting.
	StatusPending Status = "pending"
	// StatusReady: the namespace named by KeyNetns holds verified rules.
	StatusReady Status = "ready"
	// StatusFailed: the pod's own configuration is invalid; permanent until the pod changes.
	StatusFailed Status = "failed"
)

// Values of KeyFamilies.
const (
	FamiliesIPv4 = "ipv4"
	FamiliesDual = "ipv4,ipv6"
)

// RulesNone is the KeyRules value for a pod whose interception mode is NONE.
const RulesNone = "none"

// NetnsID identifies a network namespace. Kind is "cookie" (SO_NETNS_COOKIE: 64-bit, never reused
// while the system runs) or "inode" (the nsfs inode: reused by the kernel, the fallback on kernels
// older than 5.14, where the wait container's self-test is the real check).
type NetnsID struct {
	Kind  string
	Value uint64
}

// ID kinds.
const (
	KindCookie = "cookie"
	KindInode  = "inode"
)

// String renders the annotation value, e.g. "cookie:4097".
func (id NetnsID) String() string { return id.Kind + ":" + strconv.FormatUint(id.Value, 10) }

// ParseNetnsID parses an annotation value written by NetnsID.String.
func ParseNetnsID(s string) (NetnsID, error) {
	kind, val, ok := strings.Cut(s, ":")
	if !ok || (kind != KindCookie && kind != KindInode) {
		return NetnsID{}, fmt.Errorf("netns identity %q: want cookie:<n> or inode:<n>", s)
	}
	n, err := strconv.ParseUint(val, 10, 64)
	if err != nil || n == 0 {
		return NetnsID{}, fmt.Errorf("netns identity %q: %q is not a positive 64-bit number", s, val)
	}
	return NetnsID{Kind: kind, Value: n}, nil
}

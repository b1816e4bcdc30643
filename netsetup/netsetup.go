// Package netsetup programs a pod's network namespace with Istio's sidecar redirect rules: it turns
// the rule model of package rules into one idempotent iptables-restore transaction per address
// family, applies it inside the namespace, verifies the live state by reading it back, and sets up
// the routes (TPROXY policy routing, ::6 on lo) through netlink.
package netsetup

import (
	"errors"
	"fmt"
)

// Backend is the iptables backend: the node's, so the pod's rules live where the node's tools look.
type Backend string

// Backends.
const (
	BackendLegacy Backend = "legacy"
	BackendNFT    Backend = "nft"
)

// ParseBackend parses "auto", "legacy" or "nft" (auto returns "").
func ParseBackend(s string) (Backend, error) {
	switch s {
	case "auto", "":
		return "", nil
	case string(BackendLegacy), string(BackendNFT):
		return Backend(s), nil
	}
	return "", fmt.Errorf("iptables backend %q: want auto, legacy or nft", s)
}

// Other returns the other backend.
func (b Backend) Other() Backend {
	if b == BackendLegacy {
		return BackendNFT
	}
	return BackendLegacy
}

// Result describes what is programmed in a namespace.
type Result struct {
	// Hash is a short hash of the complete programmed state: both families' rules, TPROXY routes,
	// ::6 on lo. "none" for interception mode NONE.
	Hash string
	// Families is contract.FamiliesIPv4 or contract.FamiliesDual.
	Families string
	// Changed reports whether Apply changed anything (false: the same rules were already live).
	Changed bool
}

// ErrDrift reports that the live state of a namespace differs from the expected one.
var ErrDrift = errors.New("live rules differ from the expected rules")

// ErrLocked reports that the xtables lock could not be had in time: transient, retry.
var ErrLocked = errors.New("xtables lock busy")

// Namespace is a network namespace the Applier can enter (netns.Handle is one).
type Namespace interface {
	// Do runs fn on an OS thread locked inside the namespace.
	Do(fn func() error) error
	// Path names the namespace in messages.
	Path() string
}

// Options configure an Applier.
type Options struct {
	// Backend is the iptables backend; empty means detect the node's (DetectBackend).
	Backend Backend
	// LockDir is a writable directory for the per-pod xtables lock files (never /run/xtables.lock).
	LockDir string
}

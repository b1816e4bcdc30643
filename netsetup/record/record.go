// Package record is the release record: a small versioned text the node controller writes into a
// pod's own network namespace, as the alias (IFLA_IFALIAS) of its loopback interface, after it has
// verified the redirect rules there. The wait container reads it with RTM_GETLINK and watches it
// through RTNLGRP_LINK notifications, without privileges, without the API server and without
// waiting for the kubelet to refresh the downward-API file. Setting an interface's alias needs
// CAP_NET_ADMIN over the namespace, so only a process that could change the pod's rules anyway can
// write it. See docs/design.md ("The release record").
//
// The package imports only the standard library, golang.org/x/sys/unix and the annotation contract:
// the wait binary links it.
package record

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// MaxLen is the longest alias the kernel keeps (IFALIASZ - 1).
const MaxLen = 255

// Magic starts every record; the version number follows it ("pnc1 ...").
const Magic = "pnc"

// Version is the record version this package writes and the only one it reads.
const Version = 1

// Errors of Parse. A caller ignores the alias on any of them: it is never trusted.
var (
	// ErrNoRecord: the alias is empty or not a record of ours (no Magic).
	ErrNoRecord = errors.New("no release record")
	// ErrUnknownVersion: a record of a version this package does not know (a newer controller).
	ErrUnknownVersion = errors.New("release record of an unknown version")
	// ErrInvalid: a record of our version that does not parse.
	ErrInvalid = errors.New("invalid release record")
)

// Record is what the controller states about the namespace it is stored in.
type Record struct {
	// Status is contract.StatusReady (the only status written: anything else clears the record).
	Status contract.Status
	// Netns is the identity of the namespace the rules were verified in (its SO_NETNS_COOKIE).
	Netns contract.NetnsID
	// Rules is the rules hash, as in contract.KeyRules (or contract.RulesNone).
	Rules string
	// Families is contract.FamiliesIPv4 or contract.FamiliesDual, as in contract.KeyFamilies.
	Families string
}

// Ready returns the record of a release into namespace id with the rules hash and families.
func Ready(id contract.NetnsID, rules, families string) Record {
	return Record{Status: contract.StatusReady, Netns: id, Rules: rules, Families: families}
}

// String renders the record: "pnc1 status=ready netns=cookie:4097 rules=0123456789abcdef families=ipv4".
func (r Record) String() string {
	return fmt.Sprintf("%s%d status=%s netns=%s rules=%s families=%s", Magic, Version, r.Status, r.Netns, r.Rules, r.Families)
}

// Format renders the record after checking it, so that Parse would accept it.
func (r Record) Format() (string, error) {
	s := r.String()
	if _, err := Parse(s); err != nil {
		return "", err
	}
	return s, nil
}

// Parse parses an alias. It returns ErrNoRecord for an empty alias or one that is not ours,
// ErrUnknownVersion for a record of another version, and ErrInvalid (wrapped, naming the field)
// for a version-1 record that is not exactly what String writes.
func Parse(s string) (Record, error) {
	if !strings.HasPrefix(s, Magic) {
		return Record{}, ErrNoRecord
	}
	head, rest, _ := strings.Cut(s, " ")
	v, err := strconv.ParseUint(head[len(Magic):], 10, 32)
	switch {
	case err != nil:
		return Record{}, fmt.Errorf("%w: %q does not start with %s<version>", ErrNoRecord, clip(s), Magic)
	case v != Version:
		return Record{}, fmt.Errorf("%w: version %d (this binary reads version %d)", ErrUnknownVersion, v, Version)
	case len(s) > MaxLen:
		return Record{}, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalid, len(s), MaxLen)
	}
	fields := strings.Split(rest, " ")
	want := []string{"status", "netns", "rules", "families"}
	if len(fields) != len(want) {
		return Record{}, fmt.Errorf("%w: %q: want the fields %s in this order", ErrInvalid, clip(s), strings.Join(want, ", "))
	}
	vals := make([]string, len(want))
	for i, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k != want[i] {
			return Record{}, fmt.Errorf("%w: field %d is %q, want %s=<value>", ErrInvalid, i+1, clip(f), want[i])
		}
		vals[i] = v
	}
	r := Record{Status: contract.Status(vals[0]), Rules: vals[2], Families: vals[3]}
	if r.Status != contract.StatusReady {
		return Record{}, fmt.Errorf("%w: status=%q, want %q", ErrInvalid, vals[0], contract.StatusReady)
	}
	if r.Netns, err = contract.ParseNetnsID(vals[1]); err != nil {
		return Record{}, fmt.Errorf("%w: netns: %w", ErrInvalid, err)
	}
	if !validRules(r.Rules) {
		return Record{}, fmt.Errorf("%w: rules=%q, want %q or 1 to 64 lower-case hex digits", ErrInvalid, r.Rules, contract.RulesNone)
	}
	if r.Families != contract.FamiliesIPv4 && r.Families != contract.FamiliesDual {
		return Record{}, fmt.Errorf("%w: families=%q, want %q or %q", ErrInvalid, r.Families, contract.FamiliesIPv4, contract.FamiliesDual)
	}
	return r, nil
}

func validRules(s string) bool {
	if s == contract.RulesNone {
		return true
	}
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

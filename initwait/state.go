package initwait

import (
	"fmt"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

// Family is an IP address family the redirect self-test covers.
type Family string

// Address families, as written in contract.KeyFamilies.
const (
	IPv4 Family = "ipv4"
	IPv6 Family = "ipv6"
)

// families is the set of address families the controller programmed (comparable, for state changes).
type families struct{ v4, v6 bool }

// list returns the families in test order.
func (f families) list() []Family {
	var out []Family
	if f.v4 {
		out = append(out, IPv4)
	}
	if f.v6 {
		out = append(out, IPv6)
	}
	return out
}

// parseFamilies parses contract.KeyFamilies: a comma-separated, non-empty list of ipv4 and ipv6.
// An absent annotation means ipv4 (what Istio programs for a single-stack pod).
func parseFamilies(v string, present bool) (families, error) {
	if !present {
		return families{v4: true}, nil
	}
	var f families
	for _, item := range strings.Split(v, ",") {
		switch Family(item) {
		case IPv4:
			f.v4 = true
		case IPv6:
			f.v6 = true
		default:
			return families{}, fmt.Errorf("annotation %s=%q: element %q is neither %q nor %q", contract.KeyFamilies, v, item, IPv4, IPv6)
		}
	}
	return f, nil
}

// phase is what the wait container does next.
type phase int

const (
	phaseWaiting phase = iota // nothing usable yet: keep waiting
	phaseStale                // ready, but for another network namespace: keep waiting
	phaseFailed               // the controller reports the pod's configuration invalid: exit
	phaseReady                // ready for this namespace: self-test (or skip it), then release
)

// state is the outcome of evaluating one version of the annotations file. States compare with ==;
// the wait container logs one line whenever the state changes.
type state struct {
	phase  phase
	msg    string // one line: what the wait container is doing and why
	reason string // the controller's reason annotation, if any
	fam    families
	// noCapture: the pod's interception mode is NONE and the controller programmed no rules, so
	// there is nothing to self-test.
	noCapture bool
}

// evaluate decides what an annotations file means for the namespace self. data is the file's
// content, or readErr why it could not be read.
func evaluate(data []byte, readErr error, self contract.NetnsID) state {
	if readErr != nil {
		return state{msg: "waiting: " + readErr.Error()}
	}
	ann, err := ParseAnnotations(data)
	if err != nil {
		return state{msg: "waiting: annotations file is not complete yet: " + err.Error()}
	}
	return judge(fromAnnotations(ann), self)
}

// report is what one source, the annotations file or the release record, says about the pod. Both
// are judged by judge: the same checks decide a release whichever source arrives first.
type report struct {
	// what names the source in messages ("annotation", "release record").
	what string
	// statusKey, netnsKey and familiesKey name the fields in messages.
	statusKey, netnsKey, familiesKey string

	status, netns, families, rules, reason string
	hasStatus, hasNetns, hasFamilies       bool
	// interception is the pod's own sidecar.istio.io/interceptionMode annotation, from the
	// annotations file (the record does not carry it: only the pod's spec may skip the self-test).
	interception string
}

// fromAnnotations is the report of the downward-API file's annotations.
func fromAnnotations(ann map[string]string) report {
	r := report{what: "annotation", statusKey: contract.KeyStatus, netnsKey: contract.KeyNetns, familiesKey: contract.KeyFamilies,
		reason: ann[contract.KeyReason], rules: ann[contract.KeyRules], interception: ann[istioapi.AnnotationInterceptionMode]}
	r.status, r.hasStatus = ann[contract.KeyStatus]
	r.netns, r.hasNetns = ann[contract.KeyNetns]
	r.families, r.hasFamilies = ann[contract.KeyFamilies]
	return r
}

// judge decides what a report means for the namespace self.
func judge(r report, self contract.NetnsID) state {
	reason := r.reason
	switch {
	case !r.hasStatus:
		return state{msg: "waiting: the controller has not handled this pod yet (no " + r.statusKey + " " + r.what + ")"}
	case contract.Status(r.status) == contract.StatusPending:
		return state{msg: "waiting: the controller reports pending", reason: reason}
	case contract.Status(r.status) == contract.StatusFailed:
		if reason == "" {
			reason = "(the controller gave no reason)"
		}
		return state{phase: phaseFailed, msg: "the controller reports this pod's configuration invalid", reason: reason}
	case contract.Status(r.status) != contract.StatusReady:
		return state{msg: fmt.Sprintf("waiting: %s %s=%q is not one of pending, ready, failed", r.what, r.statusKey, r.status), reason: reason}
	}

	if !r.hasNetns {
		return state{msg: "waiting: status is ready but " + r.what + " " + r.netnsKey + " is missing"}
	}
	id, err := contract.ParseNetnsID(r.netns)
	if err != nil {
		return state{msg: fmt.Sprintf("waiting: status is ready but %s %s is invalid: %v", r.what, r.netnsKey, err)}
	}
	if id != self {
		return state{phase: phaseStale, msg: fmt.Sprintf("waiting: the ready %s is stale: it names network namespace %s, "+
			"but this container runs in %s (sandbox re-created?); waiting for the controller to program this namespace", r.what, id, self)}
	}
	fam, err := parseFamilies(r.families, r.hasFamilies)
	if err != nil {
		return state{msg: "waiting: status is ready but " + err.Error()}
	}
	noCapture := r.interception == istioapi.InterceptionNone && r.rules == contract.RulesNone
	return state{phase: phaseReady, msg: "the controller reports ready for this network namespace", fam: fam, noCapture: noCapture}
}

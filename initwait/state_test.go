package initwait

import (
	"errors"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/initwait/waittest"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

var testSelf = contract.NetnsID{Kind: contract.KindCookie, Value: 4097}

// ready returns the annotations of a ready pod for id, plus extra.
func ready(id string, extra ...string) map[string]string {
	m := map[string]string{
		contract.KeyStatus:   string(contract.StatusReady),
		contract.KeyNetns:    id,
		contract.KeyFamilies: contract.FamiliesIPv4,
		contract.KeyRules:    "3f2a9c1d",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "" {
			delete(m, extra[i])
		} else {
			m[extra[i]] = extra[i+1]
		}
	}
	return m
}

func TestEvaluate(t *testing.T) {
	cases := []struct {
		name      string
		ann       map[string]string
		readErr   error
		phase     phase
		msg       string // substring of the state's message
		reason    string
		fam       families
		noCapture bool
	}{
		{name: "no file", readErr: errNoFile, phase: phaseWaiting, msg: "does not exist yet"},
		{name: "unreadable", readErr: errors.New("permission denied"), phase: phaseWaiting, msg: "permission denied"},
		{name: "no annotations", ann: map[string]string{}, phase: phaseWaiting, msg: "has not handled this pod yet"},
		{name: "only foreign annotations", ann: map[string]string{"a": "b"}, phase: phaseWaiting, msg: "has not handled this pod yet"},
		{name: "pending", ann: map[string]string{contract.KeyStatus: "pending"}, phase: phaseWaiting, msg: "reports pending"},
		{name: "pending with reason", ann: map[string]string{contract.KeyStatus: "pending", contract.KeyReason: "no pod IP yet"},
			phase: phaseWaiting, msg: "reports pending", reason: "no pod IP yet"},
		{name: "failed", ann: map[string]string{contract.KeyStatus: "failed", contract.KeyReason: "bad port \"x\""},
			phase: phaseFailed, msg: "invalid", reason: "bad port \"x\""},
		{name: "failed without reason", ann: map[string]string{contract.KeyStatus: "failed"}, phase: phaseFailed, reason: "(the controller gave no reason)"},
		{name: "unknown status", ann: map[string]string{contract.KeyStatus: "Ready"}, phase: phaseWaiting, msg: `status="Ready" is not one of`},
		{name: "ready", ann: ready("cookie:4097"), phase: phaseReady, fam: families{v4: true}},
		{name: "ready dual stack", ann: ready("cookie:4097", contract.KeyFamilies, contract.FamiliesDual), phase: phaseReady, fam: families{v4: true, v6: true}},
		// The backend record is the controller's; the self-test is the same for both backends, and a
		// wait binary that predates the key (it reads only the keys it knows) releases the pod too.
		{name: "ready with the nftables backend", ann: ready("cookie:4097", contract.KeyBackend, string(contract.BackendNftables)), phase: phaseReady, fam: families{v4: true}},
		{name: "ready with a backend it does not know", ann: ready("cookie:4097", contract.KeyBackend, "ebpf"), phase: phaseReady, fam: families{v4: true}},
		{name: "ready ipv6 only", ann: ready("cookie:4097", contract.KeyFamilies, "ipv6"), phase: phaseReady, fam: families{v6: true}},
		{name: "ready without families means ipv4", ann: ready("cookie:4097", contract.KeyFamilies, ""), phase: phaseReady, fam: families{v4: true}},
		{name: "ready with bad families", ann: ready("cookie:4097", contract.KeyFamilies, "ipv4,ipx"), phase: phaseWaiting, msg: `element "ipx" is neither`},
		{name: "ready with empty families", ann: map[string]string{contract.KeyStatus: "ready", contract.KeyNetns: "cookie:4097", contract.KeyFamilies: ""},
			phase: phaseWaiting, msg: `element "" is neither`},
		{name: "ready without netns", ann: ready("cookie:4097", contract.KeyNetns, ""), phase: phaseWaiting, msg: "netns is missing"},
		{name: "ready with bad netns", ann: ready("cookie:x"), phase: phaseWaiting, msg: `"x" is not a positive 64-bit number`},
		{name: "stale cookie", ann: ready("cookie:4098"), phase: phaseStale, msg: "stale: it names network namespace cookie:4098, but this container runs in cookie:4097"},
		{name: "same number, other kind", ann: ready("inode:4097"), phase: phaseStale, msg: "stale"},
		{name: "interception NONE without rules", ann: ready("cookie:4097", istioapi.AnnotationInterceptionMode, "NONE", contract.KeyRules, "none"),
			phase: phaseReady, fam: families{v4: true}, noCapture: true},
		{name: "interception NONE but rules programmed", ann: ready("cookie:4097", istioapi.AnnotationInterceptionMode, "NONE"),
			phase: phaseReady, fam: families{v4: true}},
		{name: "rules none but interception REDIRECT", ann: ready("cookie:4097", contract.KeyRules, "none"),
			phase: phaseReady, fam: families{v4: true}},
		{name: "interception none lower case", ann: ready("cookie:4097", istioapi.AnnotationInterceptionMode, "none", contract.KeyRules, "none"),
			phase: phaseReady, fam: families{v4: true}},
		{name: "interception NONE on a stale annotation", ann: ready("cookie:1", istioapi.AnnotationInterceptionMode, "NONE", contract.KeyRules, "none"), phase: phaseStale},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var data []byte
			if tc.readErr == nil {
				data = waittest.Format(tc.ann)
			}
			s := evaluate(data, tc.readErr, testSelf)
			if s.phase != tc.phase || !strings.Contains(s.msg, tc.msg) || s.reason != tc.reason || s.fam != tc.fam || s.noCapture != tc.noCapture {
				t.Errorf("evaluate = %+v\nwant phase %v, msg containing %q, reason %q, families %+v, noCapture %v",
					s, tc.phase, tc.msg, tc.reason, tc.fam, tc.noCapture)
			}
		})
	}
}

func TestEvaluateIncompleteFile(t *testing.T) {
	s := evaluate([]byte(`pod-network-controller.istio.io/status="rea`), nil, testSelf)
	if s.phase != phaseWaiting || !strings.Contains(s.msg, "not complete yet") {
		t.Errorf("evaluate(half-written) = %+v, want waiting, not complete yet", s)
	}
}

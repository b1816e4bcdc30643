package controller

import (
	"encoding/json"
	"maps"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// annotations is the controller's part of a pod's annotations (the contract.Keys that are set).
type annotations map[string]string

// maxReason bounds the reason annotation (an ambiguity lists every candidate namespace).
const maxReason = 1024

// ours returns the controller's annotations of pod.
func ours(pod *corev1.Pod) annotations {
	a := annotations{}
	for _, k := range contract.Keys {
		if v, ok := pod.Annotations[k]; ok {
			a[k] = v
		}
	}
	return a
}

func (a annotations) status() contract.Status { return contract.Status(a[contract.KeyStatus]) }

// ready: the namespace id holds the verified rules of res, programmed with backend b (recorded
// only for nftables: no key means iptables, as for the pods of earlier versions).
func ready(id contract.NetnsID, res netsetup.Result, b contract.Backend) annotations {
	a := annotations{
		contract.KeyStatus:   string(contract.StatusReady),
		contract.KeyNetns:    id.String(),
		contract.KeyRules:    res.Hash,
		contract.KeyFamilies: res.Families,
	}
	if b == contract.BackendNftables {
		a[contract.KeyBackend] = string(b)
	}
	return a
}

// pending: a transient problem, retried.
func pending(reason string) annotations {
	return annotations{contract.KeyStatus: string(contract.StatusPending), contract.KeyReason: truncate(reason)}
}

// failed: the pod's own configuration is refused until it changes.
func failed(reason string) annotations {
	return annotations{contract.KeyStatus: string(contract.StatusFailed), contract.KeyReason: truncate(reason)}
}

func (a annotations) equal(b annotations) bool { return maps.Equal(a, b) }

// patch renders the merge patch that makes the pod's annotations of ours exactly a: every key of
// ours is in it, those a lacks as null, so the patch is right whatever the informer cache last saw.
func (a annotations) patch() []byte {
	ann := make(map[string]*string, len(contract.Keys))
	for _, k := range contract.Keys {
		if v, ok := a[k]; ok {
			ann[k] = &v
		} else {
			ann[k] = nil
		}
	}
	data, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		panic(err) // strings only: cannot happen
	}
	return data
}

func truncate(s string) string {
	if len(s) <= maxReason {
		return s
	}
	cut := maxReason - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

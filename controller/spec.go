package controller

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// spec is what the pod's current configuration asks for: a configuration and its rules' hash, or
// why it is refused (permanent until the pod changes), or a transient error.
type spec struct {
	cfg       *rules.Config
	hash      string
	refused   error
	event     string // Event reason when refused
	metric    string // errors_total reason when refused
	transient error
}

// evaluate maps the pod to its configuration and its rules' hash in backend b, the pod's
// addresses being ips: the API's podIPs before its namespace is proven, the namespace's own
// addresses after (see podAddrs).
func evaluate(pod *corev1.Pod, ips []netip.Addr, b contract.Backend) spec {
	if name := conflictingInit(pod); name != "" {
		return spec{refused: fmt.Errorf("the pod also has the init container %q, which installs or checks Istio's rules itself: "+
			"two rule sets would both be live (use the injection template of istio-pod-network-controller)", name),
			event: EventConflictingInitContainer, metric: reasonConflict}
	}
	cfg, err := podconfig.FromPod(withAddrs(pod, ips))
	switch {
	case errors.Is(err, rules.ErrTooLarge):
		return spec{refused: err, event: EventInvalidConfiguration, metric: reasonTooLarge}
	case errors.Is(err, podconfig.ErrInvalid):
		return spec{refused: err, event: EventInvalidConfiguration, metric: reasonInvalidConfig}
	case err != nil:
		return spec{transient: fmt.Errorf("pod configuration: %w", err)}
	}
	hash, err := rulesHash(b, cfg)
	if err != nil {
		return spec{refused: fmt.Errorf("%s rules: %w", b, err), event: EventInvalidConfiguration, metric: reasonInvalidConfig}
	}
	return spec{cfg: cfg, hash: hash}
}

// withAddrs returns pod as FromPod should see it with the addresses ips: pod itself when they are
// its status.podIPs, else a shallow copy with only the status IPs replaced (pod is not changed).
func withAddrs(pod *corev1.Pod, ips []netip.Addr) *corev1.Pod {
	if slices.Equal(ips, podconfig.PodIPs(pod)) {
		return pod
	}
	p := *pod
	p.Status.PodIPs = make([]corev1.PodIP, len(ips))
	for i, ip := range ips {
		p.Status.PodIPs[i] = corev1.PodIP{IP: ip.String()}
	}
	p.Status.PodIP = ""
	if len(ips) > 0 {
		p.Status.PodIP = ips[0].String()
	}
	return &p
}

// podAddrs returns the pod's addresses as its proven namespace holds them: the namespace's
// global unicast addresses, those the API lists (hint) first and in the API's order (Istio decides
// IPv6 rules by the first pod IP), then the others. An address only the API lists is not the pod's.
func podAddrs(hint, held []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, ip := range hint {
		if slices.Contains(held, ip) && !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		return nil // the namespace holds none of them: not this status's namespace (yet)
	}
	for _, ip := range held {
		if ip.IsGlobalUnicast() && !ip.IsLinkLocalUnicast() && !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	return out
}

// describe names what the configuration asks for, in messages.
func (sp spec) describe() string {
	if sp.refused != nil {
		return "refused: " + sp.refused.Error()
	}
	if sp.transient != nil {
		return "unknown: " + sp.transient.Error()
	}
	return "rules " + sp.hash
}

func families(cfg *rules.Config) string {
	if cfg.EnableIPv6 {
		return contract.FamiliesDual
	}
	return contract.FamiliesIPv4
}

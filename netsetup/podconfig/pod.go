// Package podconfig maps a pod to its sidecar capture configuration exactly as Istio's sidecar CNI
// does (the mapping table in test/conformance/istio/README.md), parsing every annotation strictly.
package podconfig

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

// ProxyContainer is the name of Istio's sidecar container.
const ProxyContainer = "istio-proxy"

// istio-proxy environment variables that shape the rules.
const (
	EnvDNSCapture  = "ISTIO_META_DNS_CAPTURE"
	EnvInvalidDrop = "INVALID_DROP"
	EnvDualStack   = "ISTIO_DUAL_STACK"
)

// alwaysExcludedInbound are the proxy's own inbound ports, always appended (Istio's CNI does).
var alwaysExcludedInbound = []uint16{15020, 15021, 15090}

// Proxy returns the pod's istio-proxy container: a regular container, or a native sidecar (an init
// container with restartPolicy Always). Nil when there is none.
func Proxy(pod *corev1.Pod) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == ProxyContainer {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if c.Name == ProxyContainer && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			return c
		}
	}
	return nil
}

// FromPod returns the capture configuration of pod. Errors are *FieldError naming the annotation or
// field and the offending value, or *rules.LimitError naming the annotation over its limit (bytes
// or elements, counted before the value is split) or the lists of a configuration with too many
// rules (counted before anything is generated); both are errors.Is ErrInvalid. Repeated list
// elements are dropped. No partial configuration is returned.
func FromPod(pod *corev1.Pod) (*rules.Config, error) {
	proxy := Proxy(pod)
	if proxy == nil {
		return nil, &FieldError{Field: "spec.containers", Value: ProxyContainer,
			Reason: "the pod has no istio-proxy container (nor a native istio-proxy sidecar)"}
	}
	if err := checkSizes(pod.Annotations); err != nil {
		return nil, err
	}
	p := parser{ann: pod.Annotations}
	cfg := rules.Default()

	if v, ok := p.ann[istioapi.AnnotationInterceptionMode]; ok {
		m, err := ParseMode(v)
		p.check(istioapi.AnnotationInterceptionMode, v, err)
		cfg.InterceptionMode = m
	}
	cfg.OutboundIPRangesInclude = p.cidrs(istioapi.AnnotationIncludeOutboundIPRanges, "*", true)
	cfg.OutboundIPRangesExclude = p.cidrs(istioapi.AnnotationExcludeOutboundIPRanges, "", false).Prefixes
	cfg.InboundPortsInclude = p.ports(istioapi.AnnotationIncludeInboundPorts, "*", true, rules.MaxPorts)
	excluded := p.ports(istioapi.AnnotationExcludeInboundPorts, "15020", false, rules.MaxPorts-len(alwaysExcludedInbound)).Ports
	cfg.InboundPortsExclude = dedup(append(excluded, alwaysExcludedInbound...))
	cfg.OutboundPortsInclude = p.ports(istioapi.AnnotationIncludeOutboundPorts, "", false, rules.MaxPorts).Ports
	cfg.OutboundPortsExclude = p.ports(istioapi.AnnotationExcludeOutboundPorts, "15020", false, rules.MaxPorts).Ports
	cfg.ExcludeInterfaces = p.interfaces(istioapi.AnnotationExcludeInterfaces)
	rerouteKey := istioapi.AnnotationKubevirtInterfaces
	if _, ok := p.ann[istioapi.AnnotationRerouteVirtual]; ok {
		rerouteKey = istioapi.AnnotationRerouteVirtual
	}
	cfg.RerouteVirtualInterfaces = p.interfaces(rerouteKey)

	field := "spec.containers[istio-proxy]"
	if !slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == ProxyContainer }) {
		field = "spec.initContainers[istio-proxy]"
	}
	if sc := proxy.SecurityContext; sc != nil {
		cfg.ProxyUIDs = p.id(field+".securityContext.runAsUser", sc.RunAsUser)
		cfg.ProxyGIDs = p.id(field+".securityContext.runAsGroup", sc.RunAsGroup)
	}
	env := map[string]string{}
	for _, e := range proxy.Env {
		env[e.Name] = e.Value
	}
	dns := p.envBool(field, env, EnvDNSCapture)
	cfg.RedirectDNS, cfg.CaptureAllDNS = dns, dns
	cfg.DropInvalid = p.envBool(field, env, EnvInvalidDrop)
	cfg.EnableIPv6 = EnableIPv6(PodIPs(pod), p.envBool(field, env, EnvDualStack))
	p.checkTotal(cfg, field, rerouteKey)
	if p.err != nil {
		return nil, p.err
	}
	return cfg, nil
}

// PodIPs returns the pod's IPs (status.podIPs, else status.podIP), skipping unparsable entries.
func PodIPs(pod *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	if len(out) == 0 && pod.Status.PodIP != "" {
		if a, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// EnableIPv6 decides IPv6 rules as Istio does: the pod's first IP is IPv6, or dual stack is on and
// the pod has an IPv6 IP.
func EnableIPv6(ips []netip.Addr, dualStack bool) bool {
	if len(ips) == 0 {
		return false
	}
	if ips[0].Is6() {
		return true
	}
	return dualStack && slices.ContainsFunc(ips, netip.Addr.Is6)
}

// parser collects the first error, so FromPod reads as the mapping table.
type parser struct {
	ann map[string]string
	err error
}

func (p *parser) check(field, value string, err error) {
	if err != nil && p.err == nil {
		p.err = &FieldError{Field: field, Value: value, Reason: err.Error()}
	}
}

func (p *parser) value(key, def string) string {
	if v, ok := p.ann[key]; ok {
		return v
	}
	return def
}

func (p *parser) ports(key, def string, wildcard bool, limit int) rules.Ports {
	v := p.value(key, def)
	if !p.withinLimit(key, v, limit) {
		return rules.Ports{}
	}
	ports, err := ParsePorts(v, wildcard)
	p.check(key, v, err)
	ports.Ports = dedup(ports.Ports)
	return ports
}

func (p *parser) cidrs(key, def string, wildcard bool) rules.Ranges {
	v := p.value(key, def)
	if !p.withinLimit(key, v, rules.MaxCIDRs) {
		return rules.Ranges{}
	}
	r, err := ParseCIDRs(v, wildcard)
	p.check(key, v, err)
	r.Prefixes = dedup(r.Prefixes)
	return r
}

func (p *parser) interfaces(key string) []string {
	v := p.value(key, "")
	if !p.withinLimit(key, v, rules.MaxInterfaces) {
		return nil
	}
	names, err := ParseInterfaces(v)
	p.check(key, v, err)
	return dedup(names)
}

// id maps istio-proxy's runAsUser/runAsGroup: unset or 0 means 1337.
func (p *parser) id(field string, v *int64) []uint32 {
	if v == nil || *v == 0 {
		return []uint32{1337}
	}
	if *v < 0 || *v > 1<<31-1 {
		p.check(field, strconv.FormatInt(*v, 10), fmt.Errorf("not a valid ID (0-2147483647)"))
		return nil
	}
	return []uint32{uint32(*v)}
}

func (p *parser) envBool(field string, env map[string]string, name string) bool {
	v, ok := env[name]
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.check(field+".env["+name+"]", v, fmt.Errorf("want true or false"))
	}
	return b
}

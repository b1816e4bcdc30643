package podconfig

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

func meshPod(ann map[string]string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Annotations: ann},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}, {Name: ProxyContainer}}},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	return p
}

// TestMalformedAnnotations: every class of bad value is refused with the key, the quoted value and
// the reason, and no configuration is returned.
func TestMalformedAnnotations(t *testing.T) {
	cases := []struct {
		key, value, reason string
	}{
		{istioapi.AnnotationInterceptionMode, "redirect", "want REDIRECT, TPROXY or NONE"},
		{istioapi.AnnotationInterceptionMode, "", "want REDIRECT, TPROXY or NONE"},
		{istioapi.AnnotationIncludeInboundPorts, "80,", "empty element"},
		{istioapi.AnnotationIncludeInboundPorts, "80,,90", "empty element"},
		{istioapi.AnnotationIncludeInboundPorts, "0", "not a port number 1-65535"},
		{istioapi.AnnotationIncludeInboundPorts, "65536", "not a port number 1-65535"},
		{istioapi.AnnotationIncludeInboundPorts, "http", "not a port number 1-65535"},
		{istioapi.AnnotationIncludeInboundPorts, "+80", "not a port number 1-65535"},
		{istioapi.AnnotationExcludeInboundPorts, "*", `"*" is not allowed here`},
		{istioapi.AnnotationExcludeOutboundPorts, "-1", "not a port number 1-65535"},
		{istioapi.AnnotationIncludeOutboundPorts, "*", `"*" is not allowed here`},
		{istioapi.AnnotationIncludeOutboundIPRanges, "10.0.0.0/33", "not a CIDR"},
		{istioapi.AnnotationIncludeOutboundIPRanges, "10.0.0.1", "not a CIDR"},
		{istioapi.AnnotationIncludeOutboundIPRanges, "10.0.0.0/8, 1.1.1.1/32", "spaces are not allowed"},
		{istioapi.AnnotationExcludeOutboundIPRanges, "*", `"*" is not allowed here`},
		{istioapi.AnnotationExcludeOutboundIPRanges, "2001:db8::/129", "not a CIDR"},
		{istioapi.AnnotationExcludeOutboundIPRanges, "10.0.0.0/8,", "empty element"},
		{istioapi.AnnotationExcludeInterfaces, "eth0,", "empty interface name"},
		{istioapi.AnnotationExcludeInterfaces, "averyveryverylongname", "at most 15 characters"},
		{istioapi.AnnotationExcludeInterfaces, "eth/0", "not an interface name"},
		{istioapi.AnnotationExcludeInterfaces, "eth:0", "not an interface name"},
		{istioapi.AnnotationExcludeInterfaces, "0eth", "not an interface name"},
		{istioapi.AnnotationRerouteVirtual, "a b", "not an interface name"},
		{istioapi.AnnotationKubevirtInterfaces, "net1,$(reboot)", "not an interface name"},
	}
	for _, c := range cases {
		t.Run(c.key+"="+c.value, func(t *testing.T) {
			cfg, err := FromPod(meshPod(map[string]string{c.key: c.value}, "10.0.0.5"))
			if cfg != nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("got cfg=%v err=%v, want ErrInvalid", cfg, err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != c.key || fe.Value != c.value {
				t.Fatalf("error %v does not name %s=%q", err, c.key, c.value)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.key) || !strings.Contains(msg, `"`+c.value+`"`) || !strings.Contains(msg, c.reason) {
				t.Fatalf("error %q lacks the key, the quoted value or %q", msg, c.reason)
			}
		})
	}
}

func TestProxyFieldErrors(t *testing.T) {
	neg := int64(-5)
	p := meshPod(nil, "10.0.0.5")
	p.Spec.Containers[1].SecurityContext = &corev1.SecurityContext{RunAsUser: &neg}
	if _, err := FromPod(p); err == nil || !strings.Contains(err.Error(), "spec.containers[istio-proxy].securityContext.runAsUser") {
		t.Fatalf("negative runAsUser: %v", err)
	}
	p = meshPod(nil, "10.0.0.5")
	p.Spec.Containers[1].Env = []corev1.EnvVar{{Name: EnvDNSCapture, Value: "yes please"}}
	if _, err := FromPod(p); err == nil || !strings.Contains(err.Error(), `env[ISTIO_META_DNS_CAPTURE]: invalid value "yes please"`) {
		t.Fatalf("bad env: %v", err)
	}
	p = meshPod(nil, "10.0.0.5")
	p.Spec.Containers = p.Spec.Containers[:1]
	if _, err := FromPod(p); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "no istio-proxy container") {
		t.Fatalf("no proxy: %v", err)
	}
}

// TestGrammarAccepts: what Istio's sidecar CNI accepts is accepted.
func TestGrammarAccepts(t *testing.T) {
	cfg, err := FromPod(meshPod(map[string]string{
		istioapi.AnnotationIncludeInboundPorts:     " 8080, 9090 ",
		istioapi.AnnotationExcludeInboundPorts:     "15021,7000",
		istioapi.AnnotationIncludeOutboundIPRanges: "10.0.0.0/8,2001:db8::/32",
		istioapi.AnnotationExcludeOutboundIPRanges: "",
		istioapi.AnnotationExcludeInterfaces:       " eth1 , net-2.x ",
		istioapi.AnnotationKubevirtInterfaces:      "k1",
		istioapi.AnnotationInterceptionMode:        "TPROXY",
	}, "10.0.0.5"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.InboundPortsInclude.Ports, []uint16{8080, 9090}) ||
		!slices.Equal(cfg.InboundPortsExclude, []uint16{15021, 7000, 15020, 15090}) ||
		!slices.Equal(cfg.ExcludeInterfaces, []string{"eth1", "net-2.x"}) ||
		!slices.Equal(cfg.RerouteVirtualInterfaces, []string{"k1"}) ||
		len(cfg.OutboundIPRangesInclude.Prefixes) != 2 || cfg.InterceptionMode != rules.ModeTProxy {
		t.Fatalf("unexpected config: %+v", cfg)
	}
	// The new reroute annotation wins over the deprecated one, even when empty.
	cfg, err = FromPod(meshPod(map[string]string{istioapi.AnnotationRerouteVirtual: "", istioapi.AnnotationKubevirtInterfaces: "k1"}))
	if err != nil || len(cfg.RerouteVirtualInterfaces) != 0 {
		t.Fatalf("reroute precedence: %+v %v", cfg, err)
	}
}

// TestEnableIPv6 follows Istio: first IP IPv6, or dual stack with any IPv6 IP.
func TestEnableIPv6(t *testing.T) {
	cases := []struct {
		ips  []string
		dual bool
		want bool
	}{
		{nil, true, false},
		{[]string{"10.0.0.1"}, true, false},
		{[]string{"fd00::1"}, false, true},
		{[]string{"fd00::1", "10.0.0.1"}, false, true},
		{[]string{"10.0.0.1", "fd00::1"}, false, false},
		{[]string{"10.0.0.1", "fd00::1"}, true, true},
	}
	for _, c := range cases {
		var ips []netip.Addr
		for _, s := range c.ips {
			ips = append(ips, netip.MustParseAddr(s))
		}
		if got := EnableIPv6(ips, c.dual); got != c.want {
			t.Errorf("EnableIPv6(%v, dual=%t) = %t, want %t", c.ips, c.dual, got, c.want)
		}
	}
	p := meshPod(nil, "10.0.0.1", "fd00::1")
	p.Spec.Containers[1].Env = []corev1.EnvVar{{Name: EnvDualStack, Value: "true"}}
	if cfg, err := FromPod(p); err != nil || !cfg.EnableIPv6 {
		t.Fatalf("dual-stack pod: %+v %v", cfg, err)
	}
}

// TestNativeSidecar: istio-proxy as an init container with restartPolicy Always.
func TestNativeSidecar(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	uid := int64(1000670000)
	p := meshPod(nil, "10.0.0.5")
	p.Spec.Containers = p.Spec.Containers[:1]
	p.Spec.InitContainers = []corev1.Container{{Name: ProxyContainer, RestartPolicy: &always,
		SecurityContext: &corev1.SecurityContext{RunAsUser: &uid}}}
	cfg, err := FromPod(p)
	if err != nil || !slices.Equal(cfg.ProxyUIDs, []uint32{1000670000}) || !slices.Equal(cfg.ProxyGIDs, []uint32{1337}) {
		t.Fatalf("native sidecar: %+v %v", cfg, err)
	}
	p.Spec.InitContainers[0].RestartPolicy = nil // a plain init container is not the proxy
	if _, err := FromPod(p); !errors.Is(err, ErrInvalid) {
		t.Fatalf("plain init container accepted as proxy: %v", err)
	}
}

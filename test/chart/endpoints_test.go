package chart

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// TestHealthOnLoopback: the health endpoint binds 127.0.0.1 and both probes ask 127.0.0.1 (a host
// network pod's probes would otherwise go to the node IP), on the health port.
func TestHealthOnLoopback(t *testing.T) {
	var ds appsv1.DaemonSet
	into(t, find(t, render(t, "controller.healthPort=9555"), "DaemonSet", release), &ds)
	c := ds.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--health-probe-bind-address=127.0.0.1:9555") {
		t.Errorf("args %q: want --health-probe-bind-address=127.0.0.1:9555", c.Args)
	}
	for name, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Host != "127.0.0.1" || probe.HTTPGet.Port.String() != "health" {
			t.Errorf("%s probe %+v: want an HTTP GET of 127.0.0.1 on the health port", name, probe)
		}
	}
	var health int32
	for _, p := range c.Ports {
		if p.Name == "health" {
			health = p.ContainerPort
		}
	}
	if health != 9555 {
		t.Errorf("health port %d, want 9555", health)
	}
}

// serviceMonitorEndpoint renders with the Service and ServiceMonitor on and returns its endpoint.
func serviceMonitorEndpoint(t *testing.T, values ...string) map[string]any {
	t.Helper()
	sm := find(t, render(t, append([]string{"metrics.service.enabled=true", "metrics.serviceMonitor.enabled=true"}, values...)...), "ServiceMonitor", release)
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 {
		t.Fatalf("ServiceMonitor endpoints %v, want one", eps)
	}
	return eps[0].(map[string]any)
}

// TestMetricsSecureByDefault: the controller serves metrics over HTTPS to reviewed tokens, the
// ServiceMonitor scrapes with https and Prometheus' token, and a metrics-reader ClusterRole grants
// get /metrics (bound to the subjects given).
func TestMetricsSecureByDefault(t *testing.T) {
	objs := render(t)
	var ds appsv1.DaemonSet
	into(t, find(t, objs, "DaemonSet", release), &ds)
	if args := ds.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--metrics-secure=true") || hasArg(args, "--metrics-cert-file") {
		t.Errorf("args %q: want --metrics-secure=true and a self-signed certificate (no --metrics-cert-file)", args)
	}
	var reader rbacv1.ClusterRole
	into(t, find(t, objs, "ClusterRole", release+"-metrics-reader"), &reader)
	if len(reader.Rules) != 1 || !slices.Equal(reader.Rules[0].NonResourceURLs, []string{"/metrics"}) || !slices.Equal(reader.Rules[0].Verbs, []string{"get"}) {
		t.Errorf("metrics-reader rules %+v, want get on /metrics only", reader.Rules)
	}
	if n := len(harness.OfKind(objs, "ClusterRoleBinding")); n != 1 {
		t.Errorf("%d ClusterRoleBindings without metrics.reader.subjects, want only the controller's", n)
	}

	ep := serviceMonitorEndpoint(t)
	tlsConfig, _ := ep["tlsConfig"].(map[string]any)
	if ep["scheme"] != "https" || ep["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" || tlsConfig["insecureSkipVerify"] != true {
		t.Errorf("ServiceMonitor endpoint %v: want https, Prometheus' ServiceAccount token, the default tlsConfig", ep)
	}

	bound := render(t, "metrics.reader.subjects[0].kind=ServiceAccount", "metrics.reader.subjects[0].name=prometheus-k8s", "metrics.reader.subjects[0].namespace=monitoring")
	var crb rbacv1.ClusterRoleBinding
	into(t, find(t, bound, "ClusterRoleBinding", release+"-metrics-reader"), &crb)
	if crb.RoleRef.Name != release+"-metrics-reader" || len(crb.Subjects) != 1 || crb.Subjects[0].Name != "prometheus-k8s" || crb.Subjects[0].Namespace != "monitoring" {
		t.Errorf("metrics-reader binding %+v, want monitoring/prometheus-k8s bound to the metrics-reader ClusterRole", crb)
	}
}

// TestMetricsCertSecret: a certificate Secret is mounted read-only and passed as the cert and key.
func TestMetricsCertSecret(t *testing.T) {
	var ds appsv1.DaemonSet
	into(t, find(t, render(t, "metrics.certSecret=controller-metrics-tls"), "DaemonSet", release), &ds)
	spec := ds.Spec.Template.Spec
	const dir = "/var/run/istio-pod-network-controller/metrics-tls"
	args := spec.Containers[0].Args
	if !slices.Contains(args, "--metrics-cert-file="+dir+"/tls.crt") || !slices.Contains(args, "--metrics-key-file="+dir+"/tls.key") {
		t.Errorf("args %q: want the Secret's tls.crt and tls.key", args)
	}
	mounted := slices.ContainsFunc(spec.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == dir && m.ReadOnly })
	secret := slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == "controller-metrics-tls"
	})
	if !mounted || !secret {
		t.Errorf("Secret volume %v, read-only mount at %s %v: want both", secret, dir, mounted)
	}
	if _, err := runHelm(t, "template", release, chartDir(t), "--set", "metrics.certSecret=x", "--set", "metrics.secure=false"); err == nil ||
		!strings.Contains(err.Error(), "metrics.certSecret needs metrics.secure") {
		t.Errorf("certSecret with plain metrics: %v, want a refusal naming both values", err)
	}
}

// TestMetricsPlainRBAC: metrics.secure=false serves plain HTTP: no token reviews, so no review rights
// and no reader role, and the ServiceMonitor scrapes http.
func TestMetricsPlainRBAC(t *testing.T) {
	objs := render(t, "metrics.secure=false")
	var ds appsv1.DaemonSet
	into(t, find(t, objs, "DaemonSet", release), &ds)
	if args := ds.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--metrics-secure=false") {
		t.Errorf("args %q: want --metrics-secure=false", args)
	}
	var role rbacv1.ClusterRole
	into(t, find(t, objs, "ClusterRole", release), &role)
	for _, r := range role.Rules {
		if slices.Contains(r.Resources, "tokenreviews") || slices.Contains(r.Resources, "subjectaccessreviews") {
			t.Errorf("plain metrics: rule %+v, want no review rights", r)
		}
	}
	for _, cr := range harness.OfKind(objs, "ClusterRole") {
		if strings.HasSuffix(cr.GetName(), "-metrics-reader") {
			t.Errorf("plain metrics: ClusterRole %s rendered", cr.GetName())
		}
	}
	if ep := serviceMonitorEndpoint(t, "metrics.secure=false"); ep["scheme"] != "http" || ep["bearerTokenFile"] != nil || ep["tlsConfig"] != nil {
		t.Errorf("plain metrics: ServiceMonitor endpoint %v, want http without token or TLS", ep)
	}
}

package chart

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

func TestHelmLint(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"default", nil},
		{"openshift", sets(openShiftValues)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runHelm(t, append([]string{"lint", "--strict", chartDir(t)}, tc.args...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint did not pass:\n%s", out)
			}
		})
	}
}

// TestTemplateGolden renders the chart with the default values and with the OpenShift values and
// compares the manifests with testdata/*.golden.yaml.
func TestTemplateGolden(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []string
	}{
		{"default", nil},
		{"openshift", openShiftValues},
	} {
		t.Run(tc.name, func(t *testing.T) {
			compareGolden(t, filepath.Join("testdata", tc.name+".golden.yaml"), renderText(t, tc.values...))
		})
	}
}

// TestIstiodValuesExample keeps the chart's example istiod-values.yaml identical to what the chart
// renders into its istiod-values ConfigMap with the default values.
func TestIstiodValuesExample(t *testing.T) {
	cm := find(t, render(t), "ConfigMap", release+"-istiod-values")
	got, _, _ := unstructured.NestedString(cm.Object, "data", "istiod-values.yaml")
	if got == "" {
		t.Fatal("the istiod-values ConfigMap has no istiod-values.yaml")
	}
	compareGolden(t, filepath.Join(chartDir(t), "istiod-values.yaml"), got)
}

// TestIstiodValuesWaitImage checks that the rendered injection template names the configured wait
// image, and only the raw template file's placeholder default otherwise.
func TestIstiodValuesWaitImage(t *testing.T) {
	cm := find(t, render(t, "waitImage.repository=registry.example/wait", "waitImage.tag=1.2.3"), "ConfigMap", release+"-istiod-values")
	values, _, _ := unstructured.NestedString(cm.Object, "data", "istiod-values.yaml")
	if want := `$waitImage := "registry.example/wait:1.2.3"`; !strings.Contains(values, want) {
		t.Errorf("istiod values do not set the wait image: want a line with %s in\n%s", want, values)
	}
	raw, err := os.ReadFile(filepath.Join(chartDir(t), "files", "injection-template.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(raw), "$waitImage := ") != 1 {
		t.Errorf("files/injection-template.yaml must define $waitImage exactly once (the chart rewrites that line)")
	}
}

func TestDaemonSet(t *testing.T) {
	for _, tc := range []struct {
		name      string
		discovery string
		caps      []corev1.Capability
		cniCache  bool // the CNI result records mounted and passed
	}{
		{"default: proc strategies need SYS_PTRACE", "", []corev1.Capability{"NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE"}, true},
		{"hardened preset: named and cni-cache", "{named,cni-cache}", []corev1.Capability{"NET_ADMIN", "NET_RAW", "SYS_ADMIN"}, true},
		{"cni-cache only", "{cni-cache}", []corev1.Capability{"NET_ADMIN", "NET_RAW", "SYS_ADMIN"}, true},
		{"ip scan", "{cni-cache,proc-ip}", []corev1.Capability{"NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE"}, true},
		{"cgroup scan", "{proc-uid}", []corev1.Capability{"NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var values []string
			if tc.discovery != "" {
				values = []string{"controller.discovery=" + tc.discovery}
			}
			var ds appsv1.DaemonSet
			into(t, find(t, render(t, values...), "DaemonSet", release), &ds)
			spec := ds.Spec.Template.Spec
			if !spec.HostNetwork || spec.PriorityClassName != "system-node-critical" || spec.NodeSelector["kubernetes.io/os"] != "linux" {
				t.Errorf("pod spec: hostNetwork=%v priorityClassName=%q nodeSelector=%v; want host network, system-node-critical, linux",
					spec.HostNetwork, spec.PriorityClassName, spec.NodeSelector)
			}
			if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists || spec.Tolerations[0].Key != "" {
				t.Errorf("tolerations %+v: want one that tolerates every taint", spec.Tolerations)
			}
			if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
				t.Errorf("update strategy %q, want RollingUpdate", ds.Spec.UpdateStrategy.Type)
			}
			if len(spec.Containers) != 1 {
				t.Fatalf("%d containers, want 1", len(spec.Containers))
			}
			c := spec.Containers[0]
			sc := c.SecurityContext
			if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.RunAsUser == nil || *sc.RunAsUser != 0 ||
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil {
				t.Fatalf("securityContext %+v: want privileged false, root, read-only root filesystem, capabilities", sc)
			}
			if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(sc.Capabilities.Add, tc.caps) {
				t.Errorf("capabilities drop %v add %v, want drop [ALL] add %v", sc.Capabilities.Drop, sc.Capabilities.Add, tc.caps)
			}
			if !hasArg(c.Args, "--discovery=") || !hasArg(c.Args, "--host-proc=/host/proc") ||
				!hasArg(c.Args, "--netns-dirs=/host/var/run/netns,/host/run/netns") || !hasArg(c.Args, "--wait-container-name="+harness.WaitContainer) {
				t.Errorf("args %q miss the discovery, host path or wait container flags", c.Args)
			}
			if got := hasArg(c.Args, "--cni-results-dir=/host/var/lib/cni/results"); got != tc.cniCache {
				t.Errorf("args %q: --cni-results-dir=/host/var/lib/cni/results given %v, want %v", c.Args, got, tc.cniCache)
			}
			if !hasArg(c.Args, "--metrics-bind-address=:9402") || !hasArg(c.Args, "--health-probe-bind-address=127.0.0.1:9403") {
				t.Errorf("args %q miss --metrics-bind-address=:9402 or --health-probe-bind-address=127.0.0.1:9403", c.Args)
			}
			if c.Args[0] != "run" {
				t.Errorf("first argument %q, want the run subcommand", c.Args[0])
			}
			var nodeName *corev1.EnvVar
			for i := range c.Env {
				if c.Env[i].Name == "NODE_NAME" {
					nodeName = &c.Env[i]
				}
			}
			if nodeName == nil || nodeName.ValueFrom == nil || nodeName.ValueFrom.FieldRef == nil || nodeName.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
				t.Errorf("NODE_NAME %+v: want it from the field spec.nodeName", nodeName)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
				c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("probes: readiness %+v liveness %+v, want /readyz and /healthz", c.ReadinessProbe, c.LivenessProbe)
			}
			if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("resources %+v: want memory requests and limits", c.Resources)
			}
			mounts := map[string]corev1.VolumeMount{}
			for _, m := range c.VolumeMounts {
				mounts[m.MountPath] = m
			}
			for _, p := range []string{"/host/proc", "/host/var/run/netns", "/host/run/netns"} {
				m, ok := mounts[p]
				if !ok || !m.ReadOnly {
					t.Errorf("mount %s: %+v, want a read-only mount", p, m)
				}
				if strings.Contains(p, "netns") && (m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer) {
					t.Errorf("mount %s: propagation %v, want HostToContainer", p, m.MountPropagation)
				}
			}
			cni, ok := mounts["/host/var/lib/cni/results"]
			if ok != tc.cniCache || ok && (!cni.ReadOnly || cni.MountPropagation != nil) {
				t.Errorf("CNI results mount %+v (present %v): want a read-only mount exactly when cni-cache is listed (%v)", cni, ok, tc.cniCache)
			}
			for _, v := range spec.Volumes {
				if ok && v.Name == cni.Name && (v.HostPath == nil || v.HostPath.Path != "/var/lib/cni/results" ||
					v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate) {
					t.Errorf("CNI results volume %+v: want hostPath /var/lib/cni/results, DirectoryOrCreate", v)
				}
			}
			lock, ok := mounts["/var/run/istio-pod-network-controller/locks"]
			if !ok || lock.ReadOnly {
				t.Errorf("lock directory mount %+v: want a writable mount", lock)
			}
			for _, v := range spec.Volumes {
				if v.Name == lock.Name && v.EmptyDir == nil {
					t.Errorf("lock volume %+v: want an emptyDir", v)
				}
			}
		})
	}
}

func hasArg(args []string, prefix string) bool {
	return slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, prefix) })
}

// TestClusterRoleIsMinimal pins the controller's RBAC: read pods, patch pods/status, write Events,
// review the tokens of metrics requests (TestMetricsPlainRBAC: not when metrics are plain).
func TestClusterRoleIsMinimal(t *testing.T) {
	var role rbacv1.ClusterRole
	into(t, find(t, render(t), "ClusterRole", release), &role)
	type rule struct{ groups, resources, verbs string }
	var got []rule
	for _, r := range role.Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %+v: no resource names or non-resource URLs expected", r)
		}
		got = append(got, rule{strings.Join(r.APIGroups, ","), strings.Join(r.Resources, ","), strings.Join(r.Verbs, ",")})
	}
	want := []rule{
		{"", "pods", "get,list,watch"},
		{"", "pods/status", "patch"},
		{",events.k8s.io", "events", "create,patch"},
		{"authentication.k8s.io", "tokenreviews", "create"},
		{"authorization.k8s.io", "subjectaccessreviews", "create"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("ClusterRole rules %+v, want exactly %+v", got, want)
	}
}

// TestBadValues: the schema and the templates name the field and the bad value.
func TestBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  string
		want []string
	}{
		{"unknown discovery strategy", "controller.discovery={named,bogus}", []string{"/controller/discovery/1", "'named', 'cni-cache', 'proc-uid', 'proc-ip'"}},
		{"previous strategy name", "controller.discovery={netns,cgroup}", []string{"/controller/discovery/0", "'named', 'cni-cache', 'proc-uid', 'proc-ip'"}},
		{"discovery without proof", "controller.discovery={named,proc-ip}", []string{"controller.discovery [named proc-ip]: none proves whose a namespace is", "add cni-cache or proc-uid"}},
		{"no admission policy", "admissionPolicy.enabled=false", []string{"admissionPolicy.enabled=false", "admissionPolicy.acknowledgeUnconfined=true"}},
		{"maxSurge", "updateStrategy.rollingUpdate.maxSurge=1", []string{"updateStrategy.rollingUpdate.maxSurge=1: a surge would run two controllers on one node"}},
		{"maxSurge percent", "updateStrategy.rollingUpdate.maxSurge=10%", []string{"updateStrategy.rollingUpdate.maxSurge=10%"}},
		{"relative CNI results dir", "hostPaths.cniResultsDir=var/lib/cni/results", []string{"/hostPaths/cniResultsDir", "var/lib/cni/results"}},
		{"unknown backend", "controller.iptablesBackend=xtables", []string{"/controller/iptablesBackend", "'auto', 'legacy', 'nft'"}},
		{"bad drift period", "controller.driftPeriod=often", []string{"/controller/driftPeriod", "often"}},
		{"ServiceMonitor without Service", "metrics.serviceMonitor.enabled=true", []string{"metrics.serviceMonitor.enabled needs metrics.service.enabled"}},
		{"API server host without port", "k8sServiceHost=10.0.0.1", []string{"k8sServiceHost and k8sServicePort must be set together"}},
		{"bad API server port", "k8sServicePort=http", []string{"/k8sServicePort", "http"}},
		{"bad API server host", "k8sServiceHost=https://10.0.0.1", []string{"/k8sServiceHost", "https://10.0.0.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runHelm(t, "template", release, chartDir(t), "--namespace", namespace, "--set", tc.set)
			if err == nil {
				t.Fatalf("--set %s rendered; want an error", tc.set)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestAPIServerAddress: k8sServiceHost/k8sServicePort become the controller's
// KUBERNETES_SERVICE_HOST/PORT (clusters without kube-proxy); unset, neither variable is there.
func TestAPIServerAddress(t *testing.T) {
	env := func(values ...string) map[string]string {
		var ds appsv1.DaemonSet
		into(t, find(t, render(t, values...), "DaemonSet", release), &ds)
		got := map[string]string{}
		for _, e := range ds.Spec.Template.Spec.Containers[0].Env {
			if strings.HasPrefix(e.Name, "KUBERNETES_SERVICE_") {
				got[e.Name] = e.Value
			}
		}
		return got
	}
	if got := env(); len(got) != 0 {
		t.Errorf("default values set %v, want no KUBERNETES_SERVICE_* variable", got)
	}
	want := map[string]string{"KUBERNETES_SERVICE_HOST": "192.0.2.10", "KUBERNETES_SERVICE_PORT": "6443"}
	if got := env("k8sServiceHost=192.0.2.10", "k8sServicePort=6443"); !maps.Equal(got, want) {
		t.Errorf("env %v, want %v", got, want)
	}
}

// TestSafetyOverrides: the documented override renders the chart without the admission policy (and
// only then), and a zero maxSurge (Kubernetes' default) is accepted.
func TestSafetyOverrides(t *testing.T) {
	policies := func(objs []*unstructured.Unstructured) int {
		n := 0
		for _, o := range harness.OfKind(objs, "ValidatingAdmissionPolicy") {
			if strings.Contains(o.GetName(), "annotations") {
				n++
			}
		}
		return n
	}
	if n := policies(render(t)); n == 0 {
		t.Errorf("default values: no annotation policy")
	}
	if n := policies(render(t, "admissionPolicy.enabled=false", "admissionPolicy.acknowledgeUnconfined=true")); n != 0 {
		t.Errorf("policy disabled with the override: %d annotation policies, want none", n)
	}
	var ds appsv1.DaemonSet
	into(t, find(t, render(t, "updateStrategy.rollingUpdate.maxSurge=0"), "DaemonSet", release), &ds)
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru == nil || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 0 {
		t.Errorf("maxSurge=0: rolling update %+v, want maxSurge 0", ru)
	}
}

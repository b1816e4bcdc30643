package injection

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"istio.io/istio/pilot/pkg/features"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/mesh/meshwatcher"
	"istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/kube/inject"
	"istio.io/istio/pkg/kube/multicluster"
)

var update = flag.Bool("update", false, "rewrite testdata/injected-*.yaml (also: REFRESH_GOLDEN=true)")

const (
	waitName   = "istio-pod-network-wait"
	volumeName = "istio-pod-network-annotations"
	mountPath  = "/etc/istio-pod-network"
	proxyName  = "istio-proxy"
	namespace  = "demo"
)

// The chart whose template is under test, relative to this module.
var (
	istiodValuesFile = filepath.Join("..", "..", "charts", "istio-pod-network-controller", "istiod-values.yaml")
	buildScript      = filepath.Join("..", "tools", "build.sh")
)

// TestInjection runs Istio's sidecar injector, configured by the istiod chart with the chart's
// istiod-values.yaml, on a sample Deployment's pod in each case, checks what our template did and
// writes the injected pod to testdata/injected-<case>.yaml.
func TestInjection(t *testing.T) {
	config, values := istiodInjectorConfig(t)
	waitImage := chartWaitImage(t)
	plain := newInjector(t, config, values, multicluster.NewFakeController())

	for _, tc := range []struct {
		name        string
		native      bool
		annotations map[string]string
		// proxy is a user-supplied istio-proxy container (Istio's documented customization).
		proxy *corev1.SecurityContext
		// openShift: istiod runs with PLATFORM=openshift and the namespace has OpenShift's
		// pre-allocated UID range, from which Istio picks the proxy UID.
		openShift bool
		wantWait  bool
		wantMode  string
		wantUID   int64
		wantGID   int64
	}{
		{name: "classic", wantWait: true, wantMode: "REDIRECT", wantUID: 1337, wantGID: 1337},
		{name: "native", native: true, wantWait: true, wantMode: "REDIRECT", wantUID: 1337, wantGID: 1337},
		{
			name: "custom-uid", wantWait: true, wantMode: "REDIRECT", wantUID: 1000670000, wantGID: 1000670000,
			proxy: &corev1.SecurityContext{RunAsUser: ptr.To[int64](1000670000), RunAsGroup: ptr.To[int64](1000670000)},
		},
		{
			name: "custom-uid-native", native: true, wantWait: true, wantMode: "REDIRECT", wantUID: 1000670000, wantGID: 1000670000,
			proxy: &corev1.SecurityContext{RunAsUser: ptr.To[int64](1000670000), RunAsGroup: ptr.To[int64](1000670000)},
		},
		{name: "openshift-namespace", openShift: true, wantWait: true, wantMode: "REDIRECT", wantUID: 1000679999, wantGID: 1000679999},
		{
			name: "tproxy", wantWait: true, wantMode: "TPROXY", wantUID: 1337, wantGID: 1337,
			annotations: map[string]string{"sidecar.istio.io/interceptionMode": "TPROXY"},
		},
		{
			name: "interception-none", wantMode: "NONE",
			annotations: map[string]string{"sidecar.istio.io/interceptionMode": "NONE"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inj := plain
			if tc.openShift {
				inj = openShiftInjector(t)
			}
			setNativeSidecars(t, tc.native)
			pod := samplePod(t, tc.annotations, tc.proxy)
			got := inj.inject(t, pod)

			for _, c := range allContainers(got) {
				if c.Name == "istio-init" || c.Name == "istio-validation" {
					t.Errorf("container %q is still there: the template must remove it", c.Name)
				}
			}
			proxy := findContainer(allContainers(got), proxyName)
			if proxy == nil {
				t.Fatalf("no istio-proxy container: Istio's sidecar template did not run")
			}
			if isNative := slices.ContainsFunc(got.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == proxyName }); isNative != tc.native {
				t.Fatalf("istio-proxy is a native sidecar: %v, want %v", isNative, tc.native)
			}
			if n, ok := got.Annotations["k8s.v1.cni.cncf.io/networks"]; ok {
				t.Errorf("the pod asks Multus for network %q: istiod still runs Istio's CNI mode", n)
			}
			if mode := got.Annotations["sidecar.istio.io/interceptionMode"]; mode != tc.wantMode {
				t.Errorf("annotation sidecar.istio.io/interceptionMode = %q, want %q", mode, tc.wantMode)
			}

			wait := findContainer(got.Spec.InitContainers, waitName)
			if !tc.wantWait {
				if wait != nil || findVolume(got, volumeName) != nil {
					t.Errorf("interception mode %s: the pod got the wait container or its volume; want neither", tc.wantMode)
				}
				writeGolden(t, tc.name, got)
				return
			}
			if wait == nil {
				t.Fatalf("no init container %q; init containers: %v", waitName, names(got.Spec.InitContainers))
			}
			checkOrder(t, got, tc.native)
			checkWaitContainer(t, wait, proxy, waitImage, tc.wantUID, tc.wantGID)
			checkAnnotationsVolume(t, got, wait)
			checkTrafficAnnotations(t, got)

			// Istio re-injects already injected pods (e.g. an injected manifest created again): the
			// template must give the same pod again. Not checked with a user-supplied istio-proxy:
			// Istio itself drops that override when re-injecting (istio-proxy goes back to the
			// template's UID while its proxy.istio.io/overrides annotation keeps the user's), which
			// no template can follow.
			if tc.proxy == nil {
				again := inj.inject(t, got.DeepCopy())
				if a, b := mustJSON(t, got), mustJSON(t, again); a != b {
					t.Errorf("injecting the injected pod again changed it:\nfirst:  %s\nsecond: %s", a, b)
				}
			}
			writeGolden(t, tc.name, got)
		})
	}
}

// checkOrder: the wait container is the first init container. With a native-sidecar proxy,
// Istio's injector always moves istio-proxy in front of every init container but its own istio-init
// and istio-validation, so there the wait container comes right after it; the chart's
// MutatingAdmissionPolicy puts it first when the API server admits the pod (test/chart checks that).
func checkOrder(t *testing.T, pod *corev1.Pod, native bool) {
	t.Helper()
	got := names(pod.Spec.InitContainers)
	want := []string{waitName, "migrate"}
	if native {
		want = []string{proxyName, waitName, "migrate"}
	}
	if !slices.Equal(got, want) {
		t.Errorf("init containers %v, want %v", got, want)
	}
	if c := names(pod.Spec.Containers); !slices.Equal(c, map[bool][]string{false: {"app", proxyName}, true: {"app"}}[native]) {
		t.Errorf("containers %v", c)
	}
}

func checkWaitContainer(t *testing.T, wait, proxy *corev1.Container, image string, wantUID, wantGID int64) {
	t.Helper()
	if wait.Image != image {
		t.Errorf("wait image %q, want the chart's %q", wait.Image, image)
	}
	if want := []string{"--annotations-file=" + mountPath + "/annotations"}; !slices.Equal(wait.Args, want) {
		t.Errorf("wait args %q, want %q", wait.Args, want)
	}
	sc := wait.SecurityContext
	if sc == nil {
		t.Fatal("wait container has no securityContext")
	}
	if uid := ptr.Deref(sc.RunAsUser, -1); uid != wantUID {
		t.Errorf("wait runAsUser %d, want %d", uid, wantUID)
	}
	if gid := ptr.Deref(sc.RunAsGroup, -1); gid != wantGID {
		t.Errorf("wait runAsGroup %d, want %d", gid, wantGID)
	}
	// The UID the rules exempt is istio-proxy's final runAsUser/runAsGroup, 0 or unset meaning 1337.
	if psc := proxy.SecurityContext; psc != nil {
		if uid := orDefault(psc.RunAsUser); uid != ptr.Deref(sc.RunAsUser, -1) {
			t.Errorf("wait runs as UID %d but istio-proxy as %d: the self-test must run as the exempted UID", ptr.Deref(sc.RunAsUser, -1), uid)
		}
		if gid := orDefault(psc.RunAsGroup); gid != ptr.Deref(sc.RunAsGroup, -1) {
			t.Errorf("wait runs as GID %d but istio-proxy as %d", ptr.Deref(sc.RunAsGroup, -1), gid)
		}
	}
	if !ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) || ptr.Deref(sc.Privileged, true) ||
		!ptr.Deref(sc.ReadOnlyRootFilesystem, false) {
		t.Errorf("wait securityContext %s: want runAsNonRoot, no privilege escalation, not privileged, read-only root filesystem", mustJSON(t, sc))
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("wait capabilities %s: want drop [ALL] and nothing added", mustJSON(t, sc.Capabilities))
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("wait seccompProfile %s: want RuntimeDefault", mustJSON(t, sc.SeccompProfile))
	}
	if wait.Resources.Limits.Memory().IsZero() || wait.Resources.Requests.Cpu().IsZero() {
		t.Errorf("wait resources %s: want small requests and limits", mustJSON(t, wait.Resources))
	}
}

func orDefault(id *int64) int64 {
	if id == nil || *id == 0 {
		return 1337
	}
	return *id
}

func checkAnnotationsVolume(t *testing.T, pod *corev1.Pod, wait *corev1.Container) {
	t.Helper()
	v := findVolume(pod, volumeName)
	if v == nil || v.DownwardAPI == nil || len(v.DownwardAPI.Items) != 1 {
		t.Fatalf("volume %q: %s, want a downward-API volume with one item", volumeName, mustJSON(t, v))
	}
	item := v.DownwardAPI.Items[0]
	if item.Path != "annotations" || item.FieldRef == nil || item.FieldRef.FieldPath != "metadata.annotations" {
		t.Errorf("downward-API item %s, want annotations <- metadata.annotations", mustJSON(t, item))
	}
	if !slices.ContainsFunc(wait.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == volumeName && m.MountPath == mountPath && m.ReadOnly
	}) {
		t.Errorf("wait volume mounts %s, want %s read-only at %s", mustJSON(t, wait.VolumeMounts), volumeName, mountPath)
	}
}

// checkTrafficAnnotations: the template writes the traffic settings with the mesh defaults resolved,
// as Istio does for its CNI plugin, so the controller sees what istio-init would have used.
func checkTrafficAnnotations(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	for k, want := range map[string]string{
		"traffic.sidecar.istio.io/includeOutboundIPRanges": "*",
		"traffic.sidecar.istio.io/includeInboundPorts":     "*",
		"traffic.sidecar.istio.io/excludeInboundPorts":     "15020",
	} {
		if got, ok := pod.Annotations[k]; !ok || got != want {
			t.Errorf("annotation %s = %q (present %v), want %q", k, got, ok, want)
		}
	}
}

// samplePod is the pod a ReplicaSet of testdata/sample-deployment.yaml would create.
func samplePod(t *testing.T, annotations map[string]string, proxy *corev1.SecurityContext) *corev1.Pod {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "sample-deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(b, &d); err != nil {
		t.Fatalf("testdata/sample-deployment.yaml: %v", err)
	}
	const hash = "6d9c7f5b8"
	pod := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: d.Name + "-" + hash + "-",
			Namespace:    d.Namespace,
			Labels:       map[string]string{"pod-template-hash": hash},
			Annotations:  map[string]string{},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: d.Name + "-" + hash,
				UID: "0b5e3d5c-8f0a-4d5e-9c61-3a8c7f2e1d40", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Spec: d.Spec.Template.Spec,
	}
	for k, v := range d.Spec.Template.Labels {
		pod.Labels[k] = v
	}
	for k, v := range annotations {
		pod.Annotations[k] = v
	}
	if proxy != nil {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: proxyName, Image: "auto", SecurityContext: proxy})
	}
	return pod
}

// injector is Istio's sidecar-injection webhook served over HTTP, as istiod serves it.
type injector struct{ url string }

func newInjector(t *testing.T, config, values string, mc multicluster.ComponentBuilder) *injector {
	t.Helper()
	dir := t.TempDir()
	configFile, valuesFile := filepath.Join(dir, "config"), filepath.Join(dir, "values")
	for path, content := range map[string]string{configFile: config, valuesFile: values} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	watcher, err := inject.NewFileWatcher(configFile, valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	// Native sidecars: the webhook decides per request from features.EnableNativeSidecars (see
	// setNativeSidecars); it needs its node client, built only when the mode is not "disabled".
	setNativeSidecars(t, true)
	mux := http.NewServeMux()
	if _, err := inject.NewWebhook(inject.WebhookParameters{
		Watcher:      watcher,
		Env:          &model.Environment{Watcher: meshwatcher.NewTestWatcher(mesh.DefaultMeshConfig())},
		Mux:          mux,
		MultiCluster: mc,
	}); err != nil {
		t.Fatalf("Istio's injection webhook refused the istiod configuration rendered with %s: %v", istiodValuesFile, err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &injector{url: srv.URL + "/inject"}
}

// openShiftInjector is the injector of istiod installed with the chart's OpenShift platform profile
// (which turns on Istio's CNI mode with Multus) plus the chart's istiod-values.yaml, running with
// PLATFORM=openshift, for a namespace with OpenShift's pre-allocated UID range and supplemental
// groups.
func openShiftInjector(t *testing.T) *injector {
	t.Helper()
	config, values := istiodInjectorConfig(t, "--set", "platform=openshift")
	t.Setenv("PLATFORM", "openshift")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace, Annotations: map[string]string{
		"openshift.io/sa.scc.uid-range":           "1000670000/10000",
		"openshift.io/sa.scc.supplemental-groups": "1000670000/10000",
	}}}
	mc := multicluster.NewFakeController()
	client := kube.NewFakeClient(ns)
	inj := newInjector(t, config, values, mc)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	mc.Add(constants.DefaultClusterName, client, stop)
	client.RunAndWait(stop)
	return inj
}

// setNativeSidecars sets istiod's ENABLE_NATIVE_SIDECARS for the rest of the test.
func setNativeSidecars(t *testing.T, on bool) {
	old := features.EnableNativeSidecars
	features.EnableNativeSidecars = features.NativeSidecarModeDisabled
	if on {
		features.EnableNativeSidecars = features.NativeSidecarModeEnabled
	}
	t.Cleanup(func() { features.EnableNativeSidecars = old })
}

// inject sends the pod to the webhook as the API server would and applies the returned patch.
func (i *injector) inject(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	raw := []byte(mustJSON(t, pod))
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "e2e-injection",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: pod.Namespace,
			Operation: admissionv1.Create,
		},
	}
	review.Request.Object.Raw = raw
	resp, err := http.Post(i.url, "application/json", bytes.NewReader([]byte(mustJSON(t, review))))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("injection webhook: %s: %s", resp.Status, body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("decode the webhook's AdmissionReview: %v: %s", err, body)
	}
	if out.Response == nil || !out.Response.Allowed {
		t.Fatalf("injection webhook refused the pod: %s", body)
	}
	if len(out.Response.Patch) == 0 {
		t.Fatal("injection webhook returned no patch: the pod was not injected")
	}
	patch, err := jsonpatch.DecodePatch(out.Response.Patch)
	if err != nil {
		t.Fatalf("decode the webhook's JSON patch: %v", err)
	}
	patched, err := patch.Apply(raw)
	if err != nil {
		t.Fatalf("apply the webhook's JSON patch: %v", err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

// istiodInjectorConfig renders Istio's own istiod chart (from the istio.io/istio module) with the
// chart's istiod-values.yaml and returns the injector ConfigMap's config and values, which istiod
// reads from /var/lib/istio/inject.
// Extra arguments go to helm.
func istiodInjectorConfig(t *testing.T, args ...string) (config, values string) {
	t.Helper()
	istioDir := goList(t, "-m", "-f", "{{.Dir}}", "istio.io/istio")
	chart := filepath.Join(istioDir, "manifests", "charts", "istio-control", "istio-discovery")
	out := run(t, helm(t), append([]string{"template", "istiod", chart, "--namespace", "istio-system",
		"--values", istiodValuesFile, "--show-only", "templates/istiod-injector-configmap.yaml"}, args...)...)
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal([]byte(out), &cm); err != nil {
		t.Fatalf("decode the istiod chart's injector ConfigMap: %v\n%s", err, out)
	}
	config, values = cm.Data["config"], cm.Data["values"]
	if !strings.Contains(config, "pod-network-wait") {
		t.Fatalf("the injector config rendered with %s does not mention the pod-network-wait template:\n%s", istiodValuesFile, config)
	}
	return config, values
}

// chartWaitImage is the wait image the chart's istiod-values.yaml puts in the template.
func chartWaitImage(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(istiodValuesFile)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\$waitImage := "([^"]+)"`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s does not set $waitImage", istiodValuesFile)
	}
	return string(m[1])
}

// helm builds (first time on this machine) and returns the helm binary, with the project's script.
func helm(t *testing.T) string {
	t.Helper()
	return filepath.Join(strings.TrimSpace(run(t, buildScript, "helm")), "helm")
}

func goList(t *testing.T, args ...string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "go", append([]string{"list"}, args...)...))
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// writeGolden writes (with -update or REFRESH_GOLDEN=true) or compares testdata/injected-<name>.yaml.
func writeGolden(t *testing.T, name string, pod *corev1.Pod) {
	t.Helper()
	b, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	got := "# Generated by `go test ./... -update` in test/injection: the pod Istio's injector makes with\n" +
		"# the istio-pod-network-controller template (case " + name + "). Do not edit.\n" + string(b)
	path := filepath.Join("testdata", "injected-"+name+".yaml")
	if *update || os.Getenv("REFRESH_GOLDEN") == "true" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (create it with -update)", err)
	}
	if string(want) != got {
		t.Errorf("%s is out of date (refresh with go test ./... -update in test/injection): %s", path, firstDifference(string(want), got))
	}
}

func firstDifference(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g || i >= len(wl) || i >= len(gl) {
			return fmt.Sprintf("line %d: golden %q, injected %q", i+1, w, g)
		}
	}
	return "no difference"
}

func allContainers(pod *corev1.Pod) []corev1.Container {
	return append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...)
}

func findContainer(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func findVolume(pod *corev1.Pod, name string) *corev1.Volume {
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == name {
			return &pod.Spec.Volumes[i]
		}
	}
	return nil
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

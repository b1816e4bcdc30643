package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
	"github.com/redhat-cop/istio-pod-network-controller/test/images"
)

// benchNS holds the benchmark's pods: no Pod Security enforcement, since istio-init needs root and
// NET_ADMIN/NET_RAW (the same namespace for every variant).
const benchNS = "startup-bench"

// BenchChartSetEnv names extra chart values for the benchmark's controller (space-separated
// key=value, as helm --set takes them); the defaults are the chart's.
const BenchChartSetEnv = "IPNC_BENCH_CHART_SET"

// istioInit is Istio's proxyv2 image as far as istio-init uses it: Istio's own pilot-agent (built by
// test/tools/build.sh) as the entrypoint, on the controller's Debian base (iptables).
var istioInit = images.Spec{
	Target:     "istio-init-bench",
	Name:       "proxyv2-istio-init",
	Comment:    []string{"Istio's pilot-agent for istio-init (istio-iptables), for the start-up benchmark."},
	Base:       images.Controller.Base,
	Files:      []images.File{{Binary: "pilot-agent", Path: "/usr/local/bin/pilot-agent"}},
	User:       "1337:1337",
	Entrypoint: []string{"/usr/local/bin/pilot-agent"},
}

// BenchmarkStartup measures, on the real node, pod created → app container started for the same
// injected pod (app + stand-in istio-proxy + the app's init container) in three variants: (a) no
// interception init container, (b) Istio's istio-init (pilot-agent istio-iptables, NET_ADMIN and
// NET_RAW), (c) this project's wait container with the chart's controller (defaults, plus
// $IPNC_BENCH_CHART_SET). Times come from the CRI (nanosecond created/started/finished times of
// sandboxes and containers), the client's clock at creation and a watch's arrival times; 20 pods
// one at a time (variants interleaved) and 30 at once per variant. It reports p50/p99 per variant
// and (c)'s breakdown. Run: E2E=1 go test ./test/realnode/ -run '^$' -bench Startup -benchtime 1x
func BenchmarkStartup(b *testing.B) {
	work, archives := gateAndBuild(b)
	ctx := b.Context()
	initArchive, err := buildIstioInit(ctx, work)
	if err != nil {
		b.Fatal(err)
	}
	n := StartForTest(b, Options{Images: append(archives, initArchive)})
	set := []string{}
	if extra := strings.Fields(os.Getenv(BenchChartSetEnv)); len(extra) > 0 {
		set = extra
	}
	if out, err := n.HelmInstall(ctx, "", release, controllerNS, set...); err != nil {
		b.Fatal(err)
	} else {
		b.Logf("helm install (extra values %q):\n%s", set, out)
	}
	if _, err := n.Cluster.EnsureNamespace(ctx, benchNS, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := n.Cluster.Client.CoreV1().ConfigMaps(benchNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: istioCARootCert}, Data: map[string]string{"root-cert.pem": string(n.Cluster.CAData)},
	}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	tmpl, err := benchTemplate(ctx)
	if err != nil {
		b.Fatal(err)
	}
	bn := &benchNode{n: n, tmpl: tmpl}
	bn.watch(b)
	bn.controllerPod = bn.waitControllerReady(b)
	variants := []variant{variantNone, variantIstioInit, variantWait}

	b.ResetTimer()
	for range b.N {
		serial := map[variant][]podTimes{}
		for i := range 20 {
			for _, v := range variants {
				serial[v] = append(serial[v], bn.run(b, v, fmt.Sprintf("%s-%d", v, i), 1)...)
			}
		}
		burst := map[variant][]podTimes{}
		for _, v := range variants {
			burst[v] = bn.run(b, v, fmt.Sprintf("%s-burst", v), 30)
		}
		b.StopTimer()
		bn.report(b, variants, serial, burst)
		b.StartTimer()
	}
}

func buildIstioInit(ctx context.Context, work string) (string, error) {
	tools, err := cluster.BuildTools(ctx, nil, "pilot-agent")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(work, "istio-bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", err
	}
	if err := os.Symlink(filepath.Join(tools, "pilot-agent"), filepath.Join(bin, "pilot-agent")); err != nil {
		return "", err
	}
	cache, err := images.DefaultCacheDir()
	if err != nil {
		return "", err
	}
	out, err := images.Build(ctx, images.Options{Specs: []images.Spec{istioInit}, BinDir: bin, OutDir: work, Repo: ImageRepo, Version: ImageVersion, CacheDir: cache, Progress: os.Stderr})
	if err != nil {
		return "", err
	}
	return out[0], nil
}

// variant is one way of starting the same pod.
type variant string

const (
	variantNone      variant = "a-none"
	variantIstioInit variant = "b-istio-init"
	variantWait      variant = "c-wait"
)

// benchTemplate is the injected pod of MeshDeployment (the wait container first among the init
// containers).
func benchTemplate(ctx context.Context) (*corev1.Pod, error) {
	dep, err := MeshDeployment(ctx, benchNS, "bench", 1)
	if err != nil {
		return nil, err
	}
	t := dep.Spec.Template
	smallProxy(&t.Spec) // 30 at once must fit on 2 cores
	return &corev1.Pod{ObjectMeta: t.ObjectMeta, Spec: t.Spec}, nil
}

// podFor returns the pod of variant v: (c) the injected pod as it is; (a) without the wait
// container; (b) with Istio's istio-init in its place, as Istio's injector writes it.
func podFor(tmpl *corev1.Pod, v variant, name string) *corev1.Pod {
	p := tmpl.DeepCopy()
	p.Name, p.Namespace = name, benchNS
	p.Labels["bench-variant"] = string(v)
	var inits []corev1.Container
	for _, c := range p.Spec.InitContainers {
		switch {
		case c.Name != harness.WaitContainer:
			inits = append(inits, c)
		case v == variantWait:
			inits = append(inits, c)
		case v == variantIstioInit:
			inits = append(inits, istioInitContainer())
		}
	}
	p.Spec.InitContainers = inits
	return p
}

// istioInitContainer is istio-init as Istio's injection template (1.2x) renders it for the
// defaults: pilot-agent istio-iptables, root with NET_ADMIN and NET_RAW.
func istioInitContainer() corev1.Container {
	f := false
	root := int64(0)
	return corev1.Container{
		Name:            "istio-init",
		Image:           images.Tag(ImageRepo, istioInit, ImageVersion),
		ImagePullPolicy: corev1.PullNever,
		Args: []string{"istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "",
			"-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: &f, Privileged: &f, ReadOnlyRootFilesystem: &f,
			RunAsGroup: &root, RunAsUser: &root, RunAsNonRoot: &f,
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}},
		},
	}
}

// percentile returns the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p/100*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// benchNode runs the benchmark's pods on the node and records watch arrival times.
type benchNode struct {
	n             *Node
	tmpl          *corev1.Pod
	controllerPod corev1.Pod

	mu      sync.Mutex
	ipSeen  map[string]time.Time // pod name → first event with a pod IP
	rdySeen map[string]time.Time // pod name → first event with our ready annotation
}

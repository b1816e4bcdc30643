package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2/ktesting"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

const (
	testNode = "node-a"
	testNS   = "app"
)

// fixture is a controller over a fake clientset, an informer cache seeded by hand (never started:
// every step is explicit), a fake namespace finder and a fake applier.
type fixture struct {
	t        *testing.T
	ctx      context.Context
	client   *fake.Clientset
	informer cache.SharedIndexInformer
	c        *Controller
	finder   *fakeFinder
	applier  *fakeApplier
	recorder *record.FakeRecorder
	limiter  *recordingLimiter
	clock    time.Time
}

func newFixture(t *testing.T, pods ...*corev1.Pod) *fixture {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	objs := make([]runtime.Object, len(pods))
	for i, p := range pods {
		objs[i] = p.DeepCopy()
	}
	return newFixtureOver(t, ctx, fake.NewClientset(objs...), newFakeFinder(), newFakeApplier(), pods...)
}

// newFixtureOver is a fixture whose controller works with an existing API server (client) and
// node (finder, applier): a restarted controller. Its informer cache holds pods.
func newFixtureOver(t *testing.T, ctx context.Context, client *fake.Clientset, finder *fakeFinder, applier *fakeApplier, pods ...*corev1.Pod) *fixture {
	t.Helper()
	pi := informers.NewSharedInformerFactory(client, 0).Core().V1().Pods()
	f := &fixture{
		t: t, ctx: ctx, client: client, informer: pi.Informer(),
		finder: finder, applier: applier, recorder: record.NewFakeRecorder(100),
		limiter: &recordingLimiter{TypedRateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[Key](20*time.Millisecond, 30*time.Second)},
		clock:   time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	c, err := New(Options{
		NodeName: testNode, Client: client, Pods: pi, Finder: f.finder, Applier: f.applier,
		Recorder: f.recorder, Metrics: NewMetrics(), RateLimiter: f.limiter, Now: func() time.Time { return f.clock },
		OpenNamespaces: func() int64 { f.finder.mu.Lock(); defer f.finder.mu.Unlock(); return int64(f.finder.open) },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.c = c
	t.Cleanup(c.queue.ShutDown)
	for _, p := range pods {
		f.informer.GetIndexer().Add(p)
	}
	return f
}

// recordingLimiter records the delays the controller's retries get, and lets the item be
// processed at once so tests need no clock.
type recordingLimiter struct {
	workqueue.TypedRateLimiter[Key]
	delays []time.Duration
}

func (r *recordingLimiter) When(k Key) time.Duration {
	r.delays = append(r.delays, r.TypedRateLimiter.When(k))
	return 0
}

func keyOf(pod *corev1.Pod) Key { return Key{Namespace: pod.Namespace, Name: pod.Name} }

// sync runs one reconcile of pod.
func (f *fixture) sync(pod *corev1.Pod) error {
	f.t.Helper()
	return f.c.sync(f.ctx, keyOf(pod))
}

// mustSync runs one reconcile that must succeed.
func (f *fixture) mustSync(pod *corev1.Pod) {
	f.t.Helper()
	if err := f.sync(pod); err != nil {
		f.t.Fatalf("sync %s: %v", pod.Name, err)
	}
	if f.finder.open != 0 {
		f.t.Fatalf("%d namespace handles left open", f.finder.open)
	}
}

type sentPatch struct {
	name, subresource string
	patchType         types.PatchType
	data              string
}

// takePatches returns the API calls made since the last call: they must all be status patches.
func (f *fixture) takePatches() []sentPatch {
	f.t.Helper()
	var out []sentPatch
	for _, a := range f.client.Actions() {
		p, ok := a.(k8stesting.PatchAction)
		if !ok || a.GetResource().Resource != "pods" {
			f.t.Fatalf("unexpected API call %s %s/%s", a.GetVerb(), a.GetResource().Resource, a.GetSubresource())
		}
		out = append(out, sentPatch{p.GetName(), p.GetSubresource(), p.GetPatchType(), string(p.GetPatch())})
	}
	f.client.ClearActions()
	return out
}

// expectPatch checks that exactly one merge patch of the status subresource was sent, with data.
// expectReady expects the ready patch on pod for cookie, with the IPv4 rules hash of synced (the
// pod as the sync saw it).
func (f *fixture) expectReady(pod, synced *corev1.Pod, cookie string) {
	f.t.Helper()
	_, hash := specOf(f.t, synced)
	f.expectPatch(pod, readyPatch(cookie, hash, "ipv4"))
}

func (f *fixture) expectPatch(pod *corev1.Pod, data string) {
	f.t.Helper()
	want := []sentPatch{{pod.Name, "status", types.MergePatchType, data}}
	if got := f.takePatches(); !slices.Equal(got, want) {
		f.t.Fatalf("patches:\n got %+v\nwant %+v", got, want)
	}
}

func (f *fixture) expectNoPatch() {
	f.t.Helper()
	if got := f.takePatches(); len(got) > 0 {
		f.t.Fatalf("unexpected patches %+v", got)
	}
}

// takeEvents returns the Events recorded since the last call ("Type Reason Message").
func (f *fixture) takeEvents() []string {
	var out []string
	for {
		select {
		case e := <-f.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// expectEvents checks the Events since the last call by type and reason, and that each message
// contains the given text.
func (f *fixture) expectEvents(want ...string) {
	f.t.Helper()
	got := f.takeEvents()
	if len(got) != len(want) {
		f.t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
	for i, w := range want {
		typeReason, text, _ := strings.Cut(w, ": ")
		if !strings.HasPrefix(got[i], typeReason+" ") || !strings.Contains(got[i], text) {
			f.t.Fatalf("event %d: got %q, want %q containing %q", i, got[i], typeReason, text)
		}
	}
}

// server returns the pod as the API server (the fake tracker) holds it.
func (f *fixture) server(pod *corev1.Pod) *corev1.Pod {
	f.t.Helper()
	obj, err := f.client.Tracker().Get(corev1.SchemeGroupVersion.WithResource("pods"), pod.Namespace, pod.Name)
	if err != nil {
		f.t.Fatal(err)
	}
	return obj.(*corev1.Pod)
}

// watch delivers the API server's version of pod through the informer (update handler and
// cache) and reports whether the controller queued it.
func (f *fixture) watch(pod *corev1.Pod) (*corev1.Pod, bool) {
	f.t.Helper()
	return f.deliver(f.server(pod))
}

// update changes the pod on the API server and delivers it (see watch).
func (f *fixture) update(pod *corev1.Pod, mutate func(*corev1.Pod)) (*corev1.Pod, bool) {
	f.t.Helper()
	p := f.server(pod).DeepCopy()
	mutate(p)
	if err := f.client.Tracker().Update(corev1.SchemeGroupVersion.WithResource("pods"), p, p.Namespace); err != nil {
		f.t.Fatal(err)
	}
	return f.deliver(p)
}

func (f *fixture) deliver(p *corev1.Pod) (*corev1.Pod, bool) {
	f.t.Helper()
	old, ok, err := f.informer.GetIndexer().Get(p)
	if err != nil || !ok {
		f.t.Fatalf("pod %s not in the cache", p.Name)
	}
	before := f.c.queue.Len()
	f.c.onUpdate(old, p)
	if err := f.informer.GetIndexer().Update(p); err != nil {
		f.t.Fatal(err)
	}
	queued := f.c.queue.Len() > before
	for f.c.queue.Len() > 0 { // the tests drive sync themselves
		k, _ := f.c.queue.Get()
		f.c.queue.Done(k)
	}
	return p, queued
}

// meshPod is a pod of the test node with the wait init container, istio-proxy, and an IP.
func meshPod(name, ip string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, UID: uidOf(name), ResourceVersion: "1",
			Annotations: map[string]string{"sidecar.istio.io/status": "{}"}},
		Spec: corev1.PodSpec{
			NodeName:       testNode,
			InitContainers: []corev1.Container{{Name: DefaultWaitContainerName, Image: "wait"}},
			Containers:     []corev1.Container{{Name: "app", Image: "app"}, {Name: podconfig.ProxyContainer, Image: "proxyv2"}},
		},
		Status: corev1.PodStatus{
			Phase:  corev1.PodPending,
			PodIP:  ip,
			PodIPs: []corev1.PodIP{{IP: ip}},
			InitContainerStatuses: []corev1.ContainerStatus{{Name: DefaultWaitContainerName, ContainerID: "containerd://wait-1",
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func uidOf(name string) types.UID {
	var n uint64
	for _, r := range name {
		n = n*31 + uint64(r)
	}
	return types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012x", n&0xffffffffffff))
}

func annotate(kv ...string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		for i := 0; i < len(kv); i += 2 {
			p.Annotations[kv[i]] = kv[i+1]
		}
	}
}

// specOf is the configuration and rules hash the pod asks for.
func specOf(t *testing.T, pod *corev1.Pod) (*rules.Config, string) {
	t.Helper()
	cfg, err := podconfig.FromPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, rs.Hash()
}

func cookie(n uint64) contract.NetnsID { return contract.NetnsID{Kind: contract.KindCookie, Value: n} }

// readyPatch is the exact merge patch that releases a pod.
func readyPatch(netnsID, hash, families string) string {
	return `{"metadata":{"annotations":{` +
		`"pod-network-controller.istio.io/backend":null,` +
		`"pod-network-controller.istio.io/families":"` + families + `",` +
		`"pod-network-controller.istio.io/netns":"` + netnsID + `",` +
		`"pod-network-controller.istio.io/reason":null,` +
		`"pod-network-controller.istio.io/rules":"` + hash + `",` +
		`"pod-network-controller.istio.io/status":"ready"}}}`
}

// statusPatch is the exact merge patch for pending or failed.
func statusPatch(status contract.Status, reason string) string {
	return `{"metadata":{"annotations":{` +
		`"pod-network-controller.istio.io/backend":null,` +
		`"pod-network-controller.istio.io/families":null,` +
		`"pod-network-controller.istio.io/netns":null,` +
		`"pod-network-controller.istio.io/reason":` + jsonString(reason) + `,` +
		`"pod-network-controller.istio.io/rules":null,` +
		`"pod-network-controller.istio.io/status":"` + string(status) + `"}}}`
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// metricValue sums a collector's samples: counter and gauge values, histogram sample counts.
func metricValue(t *testing.T, c prometheus.Collector, labels ...string) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 100)
	c.Collect(ch)
	close(ch)
	var sum float64
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		if !hasLabels(&d, labels) {
			continue
		}
		switch {
		case d.Counter != nil:
			sum += d.Counter.GetValue()
		case d.Gauge != nil:
			sum += d.Gauge.GetValue()
		case d.Histogram != nil:
			sum += float64(d.Histogram.GetSampleCount())
		}
	}
	return sum
}

func hasLabels(d *dto.Metric, kv []string) bool {
	for i := 0; i < len(kv); i += 2 {
		if !slices.ContainsFunc(d.Label, func(l *dto.LabelPair) bool { return l.GetName() == kv[i] && l.GetValue() == kv[i+1] }) {
			return false
		}
	}
	return true
}

// newSandboxed is newFixture with the pod's sandbox (cookie 4097, IP 10.1.0.5) known to the finder.
func newSandboxed(t *testing.T, pod *corev1.Pod) *fixture {
	t.Helper()
	f := newFixture(t, pod)
	f.finder.sandbox(string(pod.UID), 4097, "10.1.0.5")
	return f
}

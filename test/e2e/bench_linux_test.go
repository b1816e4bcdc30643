package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// BenchmarkBurst110 creates 110 mesh pods at once on the node (its capacity) and reports, from the
// simulated kubelet's timelines: the latency from a pod's IP being set (its status accepted by the
// API server) to the controller's ready annotation arriving (p50, p99, max), the same to the pod
// being released (its wait container exited 0 and the Running status accepted), the time from the
// last IP set and from the first IP set to the last release; the controller's peak RSS (VmHWM of
// a controller started just before the burst); and the controller's API requests per pod (from the
// API server's audit log). Once per rules backend (--rules-backend): iptables, nftables.
//
//	E2E=1 go test -run '^$' -bench Burst110 -benchtime 3x ./test/e2e/
func BenchmarkBurst110(b *testing.B) {
	for _, backend := range []contract.Backend{contract.BackendIPTables, contract.BackendNftables} {
		b.Run(string(backend), func(b *testing.B) { benchmarkBurst110(b, backend) })
	}
}

func benchmarkBurst110(b *testing.B, backend contract.Backend) {
	e := setup(b)
	if err := e.ctrl.Stop(10 * time.Second); err != nil {
		b.Fatal(err)
	}
	e.ctrl.SetExtraArgs("--rules-backend=" + string(backend))
	if err := e.ctrl.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer func() { // the other benchmarks and tests: the default backend
		e.ctrl.SetExtraArgs()
		if err := e.ctrl.Stop(10 * time.Second); err != nil {
			b.Error(err)
		} else if err := e.ctrl.Start(context.Background()); err != nil {
			b.Error(err)
		}
	}()
	e.noReleaseCheck.Store(true)
	defer e.noReleaseCheck.Store(false)
	var ipToAnn, ipToRel []time.Duration
	var lastIPToLastRel, firstIPToLastRel, sandboxes time.Duration
	var requests, patches, events float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns := e.namespace(b, "bench", nil)
		pods := e.meshPods(ns, names("p", burstSize))
		b.StartTimer()
		created := e.createPods(b, pods)
		e.waitPods(b, ns, nil, "released", releaseTimeout, released)
		b.StopTimer()
		var firstIP, lastIP, lastRel, firstSeen, lastSandbox time.Time
		for _, p := range created {
			tl, ok := e.kl.Timeline(p.UID)
			if !ok || tl.Released.IsZero() || tl.Annotated.IsZero() {
				b.Fatalf("pod %s: incomplete timeline %+v", p.Name, tl)
			}
			ipToAnn = append(ipToAnn, max(0, tl.Annotated.Sub(tl.IPPublished)))
			ipToRel = append(ipToRel, tl.Released.Sub(tl.IPPublished))
			firstIP, lastIP = earliest(firstIP, tl.IPPublished), latest(lastIP, tl.IPPublished)
			firstSeen, lastSandbox = earliest(firstSeen, tl.Seen), latest(lastSandbox, tl.SandboxReady)
			lastRel = latest(lastRel, tl.Released)
		}
		lastIPToLastRel += lastRel.Sub(lastIP)
		firstIPToLastRel += lastRel.Sub(firstIP)
		sandboxes += lastSandbox.Sub(firstSeen)
		counts, err := auditCounts(e.auditLog, ns)
		if err != nil {
			b.Fatal(err)
		}
		for key, n := range counts {
			requests += float64(n)
			switch {
			case key == "patch pods/status":
				patches += float64(n)
			case strings.HasSuffix(key, "events"):
				events += float64(n)
			}
		}
		b.Logf("burst %d: controller requests in the namespace: %v", i+1, counts)
		e.deletePods(b, ns)
		time.Sleep(2 * time.Second) // the kernel tears the namespaces down in the background
		b.StartTimer()
	}
	b.StopTimer()
	if text, err := e.ctrl.Metrics(context.Background()); err == nil {
		b.Logf("controller means over the run: %s", histogramMeans(text))
	}
	_, peak, err := e.ctrl.Memory()
	if err != nil {
		b.Fatal(err)
	}
	n := float64(b.N)
	pods := n * burstSize
	b.ReportMetric(ms(percentile(ipToAnn, 50)), "ip-to-annotation-p50-ms")
	b.ReportMetric(ms(percentile(ipToAnn, 99)), "ip-to-annotation-p99-ms")
	b.ReportMetric(ms(slices.Max(ipToAnn)), "ip-to-annotation-max-ms")
	b.ReportMetric(ms(percentile(ipToRel, 50)), "ip-to-release-p50-ms")
	b.ReportMetric(ms(percentile(ipToRel, 99)), "ip-to-release-p99-ms")
	b.ReportMetric(ms(lastIPToLastRel)/n, "last-ip-to-last-release-ms")
	b.ReportMetric(ms(firstIPToLastRel)/n, "first-ip-to-last-release-ms")
	b.ReportMetric(ms(sandboxes)/n, "node-sandboxes-ms")
	b.ReportMetric(float64(peak)/(1<<20), "controller-peak-RSS-MiB")
	b.ReportMetric(patches/pods, "status-patches/pod")
	b.ReportMetric(events/pods, "events/pod")
	b.ReportMetric(requests/pods, "requests/pod")
	b.ReportMetric(0, "ns/op") // the wall time of a burst is the node's (namespaces, processes), not the controller's
}

// BenchmarkOnePodAtATime creates 20 mesh pods per iteration one after another, each once the
// previous one is released: the latency of one pod on an otherwise idle node (IP set to
// annotation, IP set to release), without the queueing and CPU contention of a burst.
//
//	E2E=1 go test -run '^$' -bench OnePodAtATime -benchtime 1x ./test/e2e/
func BenchmarkOnePodAtATime(b *testing.B) {
	const perOp = 20
	e := setup(b)
	ns := e.namespace(b, "seq", nil)
	var ipToAnn, ipToRel []time.Duration
	start := time.Now()
	for i := 0; i < b.N*perOp; i++ {
		name := fmt.Sprintf("p-%d", i)
		p := e.createPods(b, e.meshPods(ns, []string{name}))[0]
		e.waitPods(b, ns, []string{name}, "released", releaseTimeout, released)
		tl, _ := e.kl.Timeline(p.UID)
		ipToAnn = append(ipToAnn, max(0, tl.Annotated.Sub(tl.IPPublished)))
		ipToRel = append(ipToRel, tl.Released.Sub(tl.IPPublished))
	}
	b.ReportMetric(ms(time.Since(start))/float64(b.N*perOp), "create-to-released-ms/pod")
	b.ReportMetric(ms(percentile(ipToAnn, 50)), "ip-to-annotation-p50-ms")
	b.ReportMetric(ms(slices.Max(ipToAnn)), "ip-to-annotation-max-ms")
	b.ReportMetric(ms(percentile(ipToRel, 50)), "ip-to-release-p50-ms")
	b.ReportMetric(ms(slices.Max(ipToRel)), "ip-to-release-max-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkOffNodePods measures the controller's memory with 10,000 pods bound to other nodes
// (API objects only): its informer is filtered to its node by the API server, so its resident set
// must not grow with them. It reports VmRSS of a fresh controller before the pods exist, of the
// same process once they exist, and of a controller started after they exist (its initial list).
//
//	E2E=1 go test -run '^$' -bench OffNodePods -benchtime 1x ./test/e2e/
func BenchmarkOffNodePods(b *testing.B) {
	e := setup(b)
	const offNode = 10000
	ns := e.namespace(b, "offnode", nil)
	rss := func(what string) float64 {
		time.Sleep(2 * time.Second) // let the informer settle and the heap be collected
		r, peak, err := e.ctrl.Memory()
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("controller %s: VmRSS %.1f MiB, VmHWM %.1f MiB", what, float64(r)/(1<<20), float64(peak)/(1<<20))
		return float64(r) / (1 << 20)
	}
	restart := func() {
		if err := e.ctrl.Stop(10 * time.Second); err != nil {
			b.Fatal(err)
		}
		if err := e.ctrl.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < b.N; i++ {
		restart()
		before := rss("fresh, no off-node pods")
		t0 := time.Now()
		e.createOffNode(b, ns, offNode)
		b.Logf("created %d pods on other nodes in %s", offNode, time.Since(t0).Round(time.Millisecond))
		during := rss(fmt.Sprintf("same process, %d off-node pods", offNode))
		restart()
		after := rss(fmt.Sprintf("fresh, %d off-node pods", offNode))
		b.ReportMetric(before, "RSS-MiB-0-pods")
		b.ReportMetric(during, "RSS-MiB-10k-pods-running")
		b.ReportMetric(after, "RSS-MiB-10k-pods-fresh")
		if err := e.c.Client.CoreV1().Pods(ns).DeleteCollection(context.Background(),
			metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}, metav1.ListOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(0, "ns/op")
}

// createOffNode creates n minimal pods bound to nodes other than the simulated one.
func (e *environment) createOffNode(b *testing.B, ns string, n int) {
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("off-%d", i), Namespace: ns,
					Labels: map[string]string{"app": "elsewhere"}},
				Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", 1+i%50),
					Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1.0"}}},
			}
			if _, err := e.c.Client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
				mu.Lock()
				firstErr = cmpErr(firstErr, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// auditCounts counts the controller's completed requests on objects of namespace ns, by verb and
// resource ("patch pods/status", "create events"), from the API server's audit log.
func auditCounts(path, ns string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev struct {
			Stage     string `json:"stage"`
			Verb      string `json:"verb"`
			ObjectRef struct {
				Namespace, Resource, Subresource string
			} `json:"objectRef"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("audit log %s: %w", path, err)
		}
		if ev.Stage != "ResponseComplete" || ev.ObjectRef.Namespace != ns {
			continue
		}
		res := ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			res += "/" + ev.ObjectRef.Subresource
		}
		counts[ev.Verb+" "+res]++
	}
	return counts, sc.Err()
}

// histogramMeans summarizes the controller's latency histograms as their means.
func histogramMeans(text string) string {
	sums, counts := map[string]float64{}, map[string]float64{}
	for line := range strings.Lines(text) {
		name, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || strings.Contains(name, "{") {
			continue
		}
		var v float64
		fmt.Sscan(val, &v)
		if n, ok := strings.CutSuffix(name, "_seconds_sum"); ok {
			sums[n] = v
		} else if n, ok := strings.CutSuffix(name, "_seconds_count"); ok {
			counts[n] = v
		}
	}
	var out []string
	for n, c := range counts {
		if c > 0 {
			out = append(out, fmt.Sprintf("%s %.1fms (n=%.0f)", strings.TrimPrefix(n, "istio_pod_network_controller_"), 1000*sums[n]/c, c))
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

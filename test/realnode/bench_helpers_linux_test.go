package realnode

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// podTimes are one pod's high-resolution times.
type podTimes struct {
	name                       string
	created                    time.Time      // the client's clock right before Create
	sandbox                    time.Time      // CRI: sandbox created
	network                    time.Time      // libcni's result record written: the sandbox's network up
	ipSeen, readySeen          time.Time      // watch arrival: pod IP, our ready annotation
	programmed                 programmedLine // the controller's "Programmed" line
	started, finished, createD map[string]time.Time
	logFirst, logLast          map[string]time.Time // CRI log: the container's first and last line read
}

// watch records, per pod of the benchmark's namespace, when a watch first saw its IP and our ready
// annotation. It watches again whenever the API server ends a watch.
func (bn *benchNode) watch(b *testing.B) {
	bn.ipSeen, bn.rdySeen = map[string]time.Time{}, map[string]time.Time{}
	ctx := b.Context()
	go func() {
		for ctx.Err() == nil {
			w, err := bn.n.Cluster.Client.CoreV1().Pods(benchNS).Watch(ctx, metav1.ListOptions{})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for ev := range w.ResultChan() {
				p, ok := ev.Object.(*corev1.Pod)
				if !ok || ev.Type == watch.Deleted {
					continue
				}
				bn.seen(p, time.Now())
			}
			w.Stop()
		}
	}()
}

func (bn *benchNode) seen(p *corev1.Pod, now time.Time) {
	bn.mu.Lock()
	defer bn.mu.Unlock()
	if _, ok := bn.ipSeen[p.Name]; !ok && p.Status.PodIP != "" {
		bn.ipSeen[p.Name] = now
	}
	if _, ok := bn.rdySeen[p.Name]; !ok && p.Annotations[contract.KeyStatus] == string(contract.StatusReady) {
		bn.rdySeen[p.Name] = now
	}
}

func (bn *benchNode) waitControllerReady(b *testing.B) corev1.Pod {
	var pod corev1.Pod
	err := wait.PollUntilContextTimeout(b.Context(), 200*time.Millisecond, podTimeout, true, func(ctx2 context.Context) (bool, error) {
		list, err := bn.n.Cluster.Client.CoreV1().Pods(controllerNS).List(ctx2, metav1.ListOptions{})
		if err != nil || len(list.Items) != 1 || !podReady(&list.Items[0]) {
			return false, nil
		}
		pod = list.Items[0]
		return true, nil
	})
	if err != nil {
		b.Fatalf("the controller pod Ready: %v", err)
	}
	return pod
}

// run creates count pods of variant v at once, waits until each app container runs, reads their
// CRI times, deletes them and waits until they are gone.
func (bn *benchNode) run(b *testing.B, v variant, prefix string, count int) []podTimes {
	ctx := b.Context()
	pods := bn.n.Cluster.Client.CoreV1().Pods(benchNS)
	out := make([]podTimes, count)
	var wg sync.WaitGroup
	errs := make(chan error, count)
	for i := range count {
		name := prefix
		if count > 1 {
			name = fmt.Sprintf("%s-%d", prefix, i)
		}
		out[i].name = name
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := podFor(bn.tmpl, v, name)
			out[i].created = time.Now()
			if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	sel := metav1.ListOptions{LabelSelector: "bench-variant=" + string(v)}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, podTimeout, true, func(ctx2 context.Context) (bool, error) {
		list, err := pods.List(ctx2, sel)
		if err != nil {
			return false, nil
		}
		running := 0
		for _, p := range list.Items {
			for _, s := range p.Status.ContainerStatuses {
				if s.Name == "app" && s.State.Running != nil {
					running++
				}
			}
		}
		return running == count, nil
	})
	if err != nil {
		b.Fatalf("%d pods of %s running: %v", count, v, err)
	}
	for i := range out {
		p, err := pods.Get(ctx, out[i].name, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		bn.criTimes(b, &out[i], string(p.UID))
	}
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil {
		b.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, podTimeout, true, func(ctx2 context.Context) (bool, error) {
		list, err := pods.List(ctx2, sel)
		return err == nil && len(list.Items) == 0, nil
	})
	if err != nil {
		b.Fatalf("pods of %s gone: %v", v, err)
	}
	return out
}

// criTimes fills in the sandbox's and the containers' CRI times (crictl, nanoseconds) and the
// watch arrival times.
func (bn *benchNode) criTimes(b *testing.B, pt *podTimes, uid string) {
	ctx := b.Context()
	raw, err := bn.n.Crictl(ctx, "pods", "--label", "io.kubernetes.pod.uid="+uid, "-o", "json")
	if err != nil {
		b.Fatal(err)
	}
	var sandboxes struct {
		Items []struct {
			ID        string `json:"id"`
			CreatedAt string `json:"createdAt"`
		} `json:"items"`
	}
	if err := json.Unmarshal(raw, &sandboxes); err != nil || len(sandboxes.Items) != 1 {
		b.Fatalf("crictl pods of %s: %v: %s", pt.name, err, raw)
	}
	pt.sandbox = criTime(b, sandboxes.Items[0].CreatedAt)
	// libcni writes its result record when the network's ADD has succeeded: the sandbox's network
	// is up, and the controller's local discovery can see it.
	if st, err := os.Stat(filepath.Join("/var/lib/cni/results", CNINetwork+"-"+sandboxes.Items[0].ID+"-eth0")); err == nil {
		pt.network = st.ModTime()
	}
	raw, err = bn.n.Crictl(ctx, "ps", "-a", "--pod", sandboxes.Items[0].ID, "-q")
	if err != nil {
		b.Fatal(err)
	}
	pt.createD, pt.started, pt.finished = map[string]time.Time{}, map[string]time.Time{}, map[string]time.Time{}
	pt.logFirst, pt.logLast = map[string]time.Time{}, map[string]time.Time{}
	for _, id := range strings.Fields(string(raw)) {
		st, err := bn.n.Crictl(ctx, "inspect", "-o", "json", id)
		if err != nil {
			b.Fatal(err)
		}
		var c struct {
			Status struct {
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
				CreatedAt  string `json:"createdAt"`
				StartedAt  string `json:"startedAt"`
				FinishedAt string `json:"finishedAt"`
				LogPath    string `json:"logPath"`
			} `json:"status"`
		}
		if err := json.Unmarshal(st, &c); err != nil {
			b.Fatalf("crictl inspect %s: %v", id, err)
		}
		name := c.Status.Metadata.Name
		pt.createD[name] = criTime(b, c.Status.CreatedAt)
		pt.started[name] = criTime(b, c.Status.StartedAt)
		pt.finished[name] = criTime(b, c.Status.FinishedAt)
		pt.logFirst[name], pt.logLast[name] = logSpan(c.Status.LogPath)
	}
	bn.mu.Lock()
	pt.ipSeen, pt.readySeen = bn.ipSeen[pt.name], bn.rdySeen[pt.name]
	bn.mu.Unlock()
}

// logSpan returns the times of the first and last line of a CRI container log ("<RFC 3339 time>
// <stream> <P|F> <text>" per line, the time when the runtime read the line from the container's
// pipe); zero times when the log cannot be read or is empty.
func logSpan(path string) (first, last time.Time) {
	data, err := os.ReadFile(path)
	if err != nil || path == "" {
		return first, last
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		ts, _, _ := strings.Cut(line, " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		if first.IsZero() {
			first = t
		}
		last = t
	}
	return first, last
}

// criTime parses crictl's times: nanoseconds since the epoch, or RFC 3339 with nanoseconds.
func criTime(b *testing.B, s string) time.Time {
	if s == "" || s == "0" {
		return time.Time{}
	}
	if ns, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(0, ns)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		b.Fatalf("CRI time %q: %v", s, err)
	}
	if t.Year() < 2000 {
		return time.Time{}
	}
	return t
}

// programmedLine is what a pod's first "Programmed" line of the controller says: when the rules
// were verified (the line's time less its release duration: the release record and the annotation
// patch come after the read-back), and its find and apply durations.
type programmedLine struct {
	verified    time.Time
	find, apply time.Duration
}

// programmedLines reads the controller's log (with the runtime's timestamps) for each pod's first
// "Programmed" line.
func (bn *benchNode) programmedLines(b *testing.B) map[string]programmedLine {
	raw, err := bn.n.Cluster.Client.CoreV1().Pods(controllerNS).GetLogs(bn.controllerPod.Name, &corev1.PodLogOptions{Timestamps: true}).DoRaw(b.Context())
	if err != nil {
		b.Fatalf("the controller's log: %v", err)
	}
	out := map[string]programmedLine{}
	for line := range strings.Lines(string(raw)) {
		ts, rest, ok := strings.Cut(line, " ")
		if !ok || !strings.Contains(rest, `"Programmed"`) {
			continue
		}
		_, after, ok := strings.Cut(rest, `pod="`+benchNS+"/")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(after, `"`)
		t, err := time.Parse(time.RFC3339Nano, ts)
		if _, seen := out[name]; seen || err != nil {
			continue
		}
		var d [3]time.Duration
		for i, field := range []string{"find", "apply", "release"} {
			if d[i], err = durationField(rest, field); err != nil {
				b.Fatalf("the controller's Programmed line: %v: %s", err, line)
			}
		}
		out[name] = programmedLine{verified: t.Add(-d[2]), find: d[0], apply: d[1]}
	}
	return out
}

// durationField parses the duration logged as name="..." in a klog line.
func durationField(line, name string) (time.Duration, error) {
	_, v, ok := strings.Cut(line, " "+name+`="`)
	if !ok {
		return 0, fmt.Errorf("no %s duration", name)
	}
	v, _, _ = strings.Cut(v, `"`)
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s duration %q: %w", name, v, err)
	}
	return d, nil
}

// waitName is the container that holds a variant's interception (none for (a)).
func waitName(v variant) string {
	switch v {
	case variantIstioInit:
		return "istio-init"
	case variantWait:
		return harness.WaitContainer
	}
	return ""
}

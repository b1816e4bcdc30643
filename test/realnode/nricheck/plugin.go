package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/containerd/nri/pkg/api"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/redhat-cop/istio-pod-network-controller/controller"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
)

// config is the plugin's drop-in configuration.
type config struct {
	Kubeconfig    string `json:"kubeconfig"`
	Records       string `json:"records"`
	WaitContainer string `json:"waitContainer"`
	LockDir       string `json:"lockDir"`
}

// Record is one line of the records file. Kind is "configured" (the plugin (re)started), "check"
// (a container after the wait container was inspected), or "gone" (its pod was deleted before the
// check could read it).
type Record struct {
	Time        time.Time `json:"time"`
	Kind        string    `json:"kind"`
	Pod         string    `json:"pod,omitempty"` // namespace/name
	UID         string    `json:"uid,omitempty"`
	Container   string    `json:"container,omitempty"`
	Netns       string    `json:"netns,omitempty"`   // the namespace the container joins
	NetnsID     string    `json:"netnsID,omitempty"` // its identity
	Annotation  string    `json:"annotation,omitempty"`
	Verdict     string    `json:"verdict,omitempty"`
	Source      string    `json:"source,omitempty"` // what said ready: the annotations or the release record
	Explanation string    `json:"explanation,omitempty"`
	Violation   bool      `json:"violation,omitempty"`
	Took        string    `json:"took,omitempty"`
}

type plugin struct {
	mu      sync.Mutex
	cfg     config
	client  kubernetes.Interface
	applier *netsetup.Applier
	out     *os.File
}

// getTimeout bounds the API reads of one check (an API server restart takes a few seconds; the
// runtime's plugin_request_timeout must be longer).
const getTimeout = 40 * time.Second

func (p *plugin) Configure(ctx context.Context, raw, runtime, version string) (_ api.EventMask, err error) {
	defer func() {
		if err != nil {
			p.logf("configure: %v", err)
		}
	}()
	var cfg config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return 0, fmt.Errorf("nricheck configuration %q: %w", raw, err)
	}
	if cfg.Kubeconfig == "" || cfg.Records == "" || cfg.WaitContainer == "" || cfg.LockDir == "" {
		return 0, fmt.Errorf("nricheck configuration %q: kubeconfig, records, waitContainer and lockDir are required", raw)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return 0, fmt.Errorf("nricheck kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	rc.QPS, rc.Burst, rc.Timeout = 200, 400, 5*time.Second
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return 0, err
	}
	applier, err := netsetup.NewApplier(ctx, netsetup.Options{LockDir: cfg.LockDir})
	if err != nil {
		return 0, fmt.Errorf("nricheck iptables: %w", err)
	}
	out, err := os.OpenFile(cfg.Records, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	p.mu.Lock()
	p.cfg, p.client, p.applier, p.out = cfg, client, applier, out
	p.mu.Unlock()
	p.write(Record{Kind: "configured", Explanation: runtime + " " + version})
	return api.MustParseEventMask("StartContainer"), nil
}

func (p *plugin) StartContainer(ctx context.Context, sb *api.PodSandbox, ctr *api.Container) error {
	if rec, ok := p.check(ctx, sb, ctr); ok {
		p.write(rec)
	}
	return nil // never refuse: the test reads the records
}

// check inspects ctr's network namespace if ctr comes after its pod's wait init container.
func (p *plugin) check(ctx context.Context, sb *api.PodSandbox, ctr *api.Container) (Record, bool) {
	t0 := time.Now()
	rec := Record{Kind: "check", Pod: sb.GetNamespace() + "/" + sb.GetName(), UID: sb.GetUid(), Container: ctr.GetName()}
	pod, err := p.getPod(ctx, sb)
	switch {
	case errors.Is(err, errGone):
		rec.Kind, rec.Explanation = "gone", err.Error()
		return rec, true
	case err != nil:
		rec.Violation, rec.Explanation = true, "no check possible: "+err.Error()
		return rec, true
	}
	wait := slices.IndexFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == p.cfg.WaitContainer })
	if wait < 0 {
		return rec, false // not a mesh pod
	}
	if i := slices.IndexFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == ctr.GetName() }); i >= 0 && i <= wait {
		return rec, false // the wait container or one before it
	}
	if len(pod.Status.PodIPs) == 0 {
		// The controller may release a pod before the kubelet has reported its IP (it reads the
		// sandbox's IPs from the runtime's CNI result): take them from the runtime as well.
		for _, ip := range sb.GetIps() {
			pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: ip})
		}
		if len(pod.Status.PodIPs) > 0 {
			pod.Status.PodIP = pod.Status.PodIPs[0].IP
		}
	}
	rec.Netns = netnsPath(sb, ctr)
	if rec.Netns == "" {
		rec.Violation, rec.Explanation = true, "the runtime names no network namespace for the container"
		return rec, true
	}
	in := p.inspect(ctx, pod, rec.Netns)
	rec.Source = "annotations"
	if in.Err != nil || in.Verdict != controller.VerdictOK {
		// The wait container also accepts the controller's release record in the namespace
		// (written before the API patch): judge it the same way, with its values as the
		// annotations.
		if withRecord, ok := fromReleaseRecord(pod, rec.Netns); ok {
			if in2 := p.inspect(ctx, withRecord, rec.Netns); in2.Err == nil && in2.Verdict == controller.VerdictOK {
				in, rec.Source = in2, "release record (annotations: "+describe(in)+")"
			}
		}
	}
	rec.NetnsID, rec.Annotation = in.NetnsID, in.Annotations[contractNetns]
	rec.Verdict, rec.Explanation = string(in.Verdict), describe(in)
	rec.Violation = in.Err != nil || in.Verdict != controller.VerdictOK
	rec.Took = time.Since(t0).Round(time.Microsecond).String()
	return rec, true
}

func (p *plugin) inspect(ctx context.Context, pod *corev1.Pod, path string) *controller.Inspection {
	return controller.Inspect(ctx, pod, p.cfg.WaitContainer, pathFinder(path), verifyOnly{p.applier}, nil)
}

func describe(in *controller.Inspection) string {
	if in.Err != nil {
		return in.Err.Error()
	}
	return string(in.Verdict) + ": " + in.Explanation
}

var errGone = errors.New("the pod is gone")

// getPod reads the pod of sb, retrying while the API server is unreachable.
func (p *plugin) getPod(ctx context.Context, sb *api.PodSandbox) (*corev1.Pod, error) {
	deadline := time.Now().Add(getTimeout)
	for {
		pod, err := p.client.CoreV1().Pods(sb.GetNamespace()).Get(ctx, sb.GetName(), metav1.GetOptions{})
		switch {
		case err == nil && string(pod.UID) == sb.GetUid():
			return pod, nil
		case err == nil || apierrors.IsNotFound(err):
			return nil, fmt.Errorf("%w: pod %s/%s uid %s", errGone, sb.GetNamespace(), sb.GetName(), sb.GetUid())
		case time.Now().After(deadline) || ctx.Err() != nil:
			return nil, fmt.Errorf("get pod %s/%s: %w", sb.GetNamespace(), sb.GetName(), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (p *plugin) write(rec Record) {
	rec.Time = time.Now()
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out != nil {
		_, _ = p.out.Write(append(b, '\n'))
	}
}

// logf records a message: in the records file once configured, before that in <binary>.log
// (containerd discards a pre-installed plugin's output).
func (p *plugin) logf(format string, args ...any) {
	p.mu.Lock()
	configured := p.out != nil
	p.mu.Unlock()
	if configured {
		p.write(Record{Kind: "log", Explanation: fmt.Sprintf(format, args...)})
		return
	}
	if exe, err := os.Executable(); err == nil {
		if f, err := os.OpenFile(exe+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			fmt.Fprintf(f, "%s %s\n", time.Now().Format(time.RFC3339Nano), fmt.Sprintf(format, args...))
			f.Close()
		}
	}
}

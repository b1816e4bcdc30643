package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// tokenLifetime outlives a benchmark run.
const tokenLifetime = 2 * time.Hour

// Controller is one controller process of the fleet.
type Controller struct {
	Node        string
	Dir         string // kubeconfig, lock and state directories, log
	MetricsAddr string
	HealthAddr  string
	proc        *cluster.Process
}

// Fleet is controller processes, one per node. The zero value is an empty fleet.
type Fleet struct {
	Controllers []*Controller
}

// FleetOptions configure Fleet.Start.
type FleetOptions struct {
	Binary  string           // the istio-pod-network-controller binary
	Install *harness.Install // the chart on the cluster: its controller Pod object is the template
	Dir     string           // one subdirectory per controller
	Stagger time.Duration    // between two starts
	Args    []string         // more flags
}

// Start creates, for each node, the controller's Pod object (the chart's, bound to that node) and a
// ServiceAccount token bound to it, and starts the controller binary with it, Stagger apart, adding
// them to the fleet. It returns once every process has started; Ready waits for their caches.
func (f *Fleet) Start(ctx context.Context, c *cluster.Cluster, nodes []string, opts FleetOptions) error {
	for i, node := range nodes {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(opts.Stagger):
			}
		}
		ctrl, err := startController(ctx, c, node, opts)
		if err != nil {
			return fmt.Errorf("controller on node %s: %w", node, err)
		}
		f.Controllers = append(f.Controllers, ctrl)
	}
	return nil
}

func startController(ctx context.Context, c *cluster.Cluster, node string, opts FleetOptions) (*Controller, error) {
	dir := filepath.Join(opts.Dir, node)
	for _, d := range []string{"locks", "netns", "cni"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	pod, err := controllerPod(ctx, c, opts.Install, node)
	if err != nil {
		return nil, err
	}
	token, err := c.PodToken(ctx, pod, tokenLifetime)
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := c.WriteKubeconfig(kubeconfig, token); err != nil {
		return nil, err
	}
	ports, err := listenPorts(2)
	if err != nil {
		return nil, err
	}
	ctrl := &Controller{Node: node, Dir: dir,
		MetricsAddr: "127.0.0.1:" + strconv.Itoa(ports[0]), HealthAddr: "127.0.0.1:" + strconv.Itoa(ports[1])}
	args := append([]string{"run",
		"--node-name=" + node,
		"--kubeconfig=" + kubeconfig,
		"--metrics-bind-address=" + ctrl.MetricsAddr,
		"--health-probe-bind-address=" + ctrl.HealthAddr,
		"--lock-dir=" + filepath.Join(dir, "locks"),
		"--netns-dirs=" + filepath.Join(dir, "netns"),
		"--cni-results-dir=" + filepath.Join(dir, "cni"),
		// An explicit backend: no iptables-save run on the host per controller at start.
		"--iptables-backend=nft",
	}, opts.Args...)
	env := append(os.Environ(), "KUBECONFIG=", "NODE_NAME=")
	if ctrl.proc, err = cluster.StartProcess("controller-"+node, opts.Binary, args, env, filepath.Join(dir, "controller.log")); err != nil {
		return nil, err
	}
	return ctrl, nil
}

// nextPort is where listenPorts looks next. The controller refuses port 0, and a port picked from
// the ephemeral range (as cluster.FreePorts does) may be taken by an outgoing connection before the
// controller listens on it: with a hundred controllers connecting to the API server, one was.
var nextPort atomic.Int32

// listenPorts returns n loopback ports below the ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range) that were free a moment ago, each returned once.
func listenPorts(n int) ([]int, error) {
	low := 32768
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				low = v
			}
		}
	}
	nextPort.CompareAndSwap(0, int32(low-8000))
	var out []int
	for len(out) < n {
		p := int(nextPort.Add(1))
		if p >= low {
			return nil, fmt.Errorf("no free port below the ephemeral range (%d)", low)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue // taken
		}
		l.Close()
		out = append(out, p)
	}
	return out, nil
}

// controllerPod creates the chart's controller Pod object on node (a copy of the one InstallChart
// made for the cluster's first node), or returns that one.
func controllerPod(ctx context.Context, c *cluster.Cluster, in *harness.Install, node string) (*corev1.Pod, error) {
	if in.Pod.Spec.NodeName == node {
		return in.Pod, nil
	}
	base := strings.TrimSuffix(in.Pod.Name, "-"+in.Pod.Spec.NodeName)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: in.Pod.Namespace, Name: base + "-" + node,
			Labels: in.Pod.Labels, Annotations: in.Pod.Annotations, OwnerReferences: in.Pod.OwnerReferences},
		Spec: *in.Pod.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = node
	created, err := c.Client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create the controller's Pod object: %w", err)
	}
	return created, nil
}

// Ready waits until every controller's /readyz answers 200 (its pod cache has synced), or one
// exits, or ctx ends.
func (f *Fleet) Ready(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	for _, ctrl := range f.Controllers {
		for {
			if ctrl.proc.Exited() {
				return fmt.Errorf("controller on node %s exited: %v (log %s)", ctrl.Node, ctrl.proc.Err(), filepath.Join(ctrl.Dir, "controller.log"))
			}
			resp, err := client.Get("http://" + ctrl.HealthAddr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("controller on node %s not ready: %w", ctrl.Node, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// Stats reads every controller's resident set and CPU time.
func (f *Fleet) Stats() ([]ProcStat, error) {
	out := make([]ProcStat, len(f.Controllers))
	var errs []error
	for i, ctrl := range f.Controllers {
		if ctrl.proc.Exited() {
			errs = append(errs, fmt.Errorf("controller on node %s exited: %v", ctrl.Node, ctrl.proc.Err()))
			continue
		}
		st, err := ReadProc(ctrl.proc.Pid())
		if err != nil {
			errs = append(errs, fmt.Errorf("controller on node %s: %w", ctrl.Node, err))
		}
		out[i] = st
	}
	return out, errors.Join(errs...)
}

// Stop stops every controller (SIGTERM, SIGKILL after 5 s), all at once.
func (f *Fleet) Stop() {
	var wg sync.WaitGroup
	for _, ctrl := range f.Controllers {
		wg.Go(func() { ctrl.proc.Stop(5 * time.Second) })
	}
	wg.Wait()
}

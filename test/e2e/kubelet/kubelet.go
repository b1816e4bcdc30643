package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

// Kubelet is a running simulated kubelet. Its methods are safe for concurrent use.
type Kubelet struct {
	opts     Options
	nodeIP   string
	v4, v6   netip.Prefix
	stateDir string
	ownState bool
	image    string // the wait binary, copied into the state directory (root file systems link it)
	netw     *network

	ctx    context.Context
	cancel context.CancelFunc
	queue  workqueue.TypedRateLimitingInterface[string]
	lister corelisters.PodLister
	wg     sync.WaitGroup
	create chan struct{} // a slot per sandbox being created

	mu      sync.Mutex
	alloc   *ipAllocator
	pods    map[string]*podState // by namespace/name
	cgroups []string             // cgroup directories the simulator created, parents first
	stopped bool
}

// podState is the simulator's state of one pod (one UID).
type podState struct {
	key string
	uid types.UID
	dir string

	mu      sync.Mutex // held by sync, Recreate, Stop and the wait exit handler
	sb      *sandbox
	gen     int
	offset  uint32 // IP offset, valid when hasIP
	hasIP   bool
	wait    *proc
	run     containerRun
	pending bool // a sandbox creation is queued
	runs    int32
	written []byte            // last status patch accepted
	volumes map[string][]byte // last content published per volume directory
	cgroups []string          // the pod's cgroup directories, once made
	gone    bool
	start   time.Time

	infoMu sync.Mutex // protects tl and info, for accessors and the informer handler
	tl     Timeline
	info   Sandbox
}

// sandbox is a pod's network namespace and pause process.
type sandbox struct {
	info     Sandbox
	ready    time.Time
	ns       *netns.Handle // nil for hostNetwork pods
	pause    *proc
	register string   // bind-mounted namespace path, or ""
	cgroups  []string // the pod's cgroup directories
}

// Start checks the host, creates the node bridge, starts watching the node's pods and returns
// once the informer has synced. ctx bounds the start only; the simulator runs until Stop.
func Start(ctx context.Context, opts Options) (_ *Kubelet, err error) {
	opts, err = opts.withDefaults()
	if err != nil {
		return nil, err
	}
	k := &Kubelet{opts: opts, pods: map[string]*podState{}, create: make(chan struct{}, opts.SandboxWorkers)}
	k.v4, _ = netip.ParsePrefix(opts.PodCIDRv4)
	k.v6, _ = netip.ParsePrefix(opts.PodCIDRv6)
	k.alloc = newIPAllocator(k.v4, k.v6)
	if k.nodeIP = opts.NodeIP; k.nodeIP == "" {
		if k.nodeIP, err = nodeInternalIP(ctx, opts); err != nil {
			return nil, err
		}
	}
	if err := k.makeStateDir(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = k.Stop()
		}
	}()
	if k.netw, err = newNetwork(opts, k.v4, k.v6); err != nil {
		return nil, err
	}
	k.ctx, k.cancel = context.WithCancel(context.Background())
	k.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 2*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "kubelet-sim"})
	factory := informers.NewSharedInformerFactoryWithOptions(opts.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", opts.NodeName).String()
		}))
	podInformer := factory.Core().V1().Pods()
	k.lister = podInformer.Lister()
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.observe(obj) },
		UpdateFunc: func(_, obj any) { k.observe(obj) },
		DeleteFunc: func(obj any) {
			if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
				k.queue.Add(key)
			}
		},
	}); err != nil {
		return nil, err
	}
	factory.Start(k.ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("kubelet: informer cache for %v did not sync: %w", typ, context.Cause(ctx))
		}
	}
	for range opts.Workers {
		k.wg.Go(func() {
			for k.processNext() {
			}
		})
	}
	k.logf("simulated kubelet for node %s running: bridge %s (%s, %s), state in %s", opts.NodeName, opts.Bridge, k.v4, k.v6, k.stateDir)
	return k, nil
}

func nodeInternalIP(ctx context.Context, opts Options) (string, error) {
	node, err := opts.Client.CoreV1().Nodes().Get(ctx, opts.NodeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("kubelet: read Node %q for its InternalIP (or set Options.NodeIP): %w", opts.NodeName, err)
	}
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address, nil
		}
	}
	return "", fmt.Errorf("kubelet: Node %q has no InternalIP address: set Options.NodeIP", opts.NodeName)
}

// makeStateDir creates the state directory and copies the wait binary into it, so root file
// systems can hard-link it.
func (k *Kubelet) makeStateDir() error {
	if k.opts.StateDir == "" {
		dir, err := os.MkdirTemp("", "kubelet-sim-")
		if err != nil {
			return fmt.Errorf("kubelet: state directory: %w", err)
		}
		k.stateDir, k.ownState = dir, true
	} else {
		k.stateDir = k.opts.StateDir
	}
	// Pods' root file systems must be traversable by unprivileged wait processes.
	if err := os.MkdirAll(filepath.Join(k.stateDir, "pods"), 0o755); err != nil {
		return fmt.Errorf("kubelet: state directory: %w", err)
	}
	if err := os.Chmod(k.stateDir, 0o755); err != nil {
		return fmt.Errorf("kubelet: state directory: %w", err)
	}
	k.image = filepath.Join(k.stateDir, "istio-pod-network-wait")
	return copyFile(k.opts.WaitBinary, k.image, 0o755)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func (k *Kubelet) logf(format string, args ...any) {
	fmt.Fprintf(k.opts.Log, "%s kubelet: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// Stop stops watching, kills every simulated process, removes the namespaces, veths, bridge,
// cgroups and (if Start made it) the state directory. Pod objects are left in the API. It is safe
// to call more than once.
func (k *Kubelet) Stop() error {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return nil
	}
	k.stopped = true
	k.mu.Unlock()
	if k.cancel != nil {
		k.cancel()
	}
	if k.queue != nil {
		k.queue.ShutDown()
	}
	k.mu.Lock()
	pods := make([]*podState, 0, len(k.pods))
	for _, st := range k.pods {
		pods = append(pods, st)
	}
	k.mu.Unlock()
	for _, st := range pods {
		k.remove(st)
	}
	k.wg.Wait()
	var errs []error
	if k.netw != nil {
		errs = append(errs, k.netw.close())
	}
	k.mu.Lock()
	removeCgroupDirs(k.cgroups)
	k.mu.Unlock()
	if k.ownState {
		errs = append(errs, os.RemoveAll(k.stateDir))
	}
	return errors.Join(errs...)
}

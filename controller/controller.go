// Package controller is the node controller: it watches the pods of its node, programs the network
// namespace of every mesh pod that carries the wait init container with Istio's redirect rules, and
// annotates the pod (through pods/status) so that the wait container releases it. See
// docs/controller.md and docs/design.md.
//
// The pattern is sample-controller's: event handlers only enqueue; a typed rate-limited work queue
// keyed by namespace/name serializes all work on one pod (programming, retries and the periodic drift
// check alike); workers read from the informer cache and never mutate it.
package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// Key is the work queue key: a pod's namespace and name. A pod re-created under the same name is
// the same key; the worker notices the new UID and forgets the old pod's state first.
type Key = types.NamespacedName

// syncTimeout bounds one reconcile of one pod.
const syncTimeout = 2 * time.Minute

// Options are the controller's collaborators and settings.
type Options struct {
	NodeName          string
	WaitContainerName string
	DriftPeriod       time.Duration
	Workers           int

	Client   kubernetes.Interface
	Pods     coreinformers.PodInformer // filtered to NodeName, not started
	Finder   Finder
	Applier  Applier
	Recorder record.EventRecorder
	// Metrics receives the series (one controller per Metrics); nil: a private set.
	Metrics *Metrics
	// OpenNamespaces reports the namespace fds held open (for a gauge); nil: not exported.
	OpenNamespaces func() int64
	// Records writes the release record into the namespaces programmed; nil: annotations only.
	Records RecordWriter
	// LocalCNIDir, when set, is the CNI result cache watched for new sandboxes (local discovery).
	LocalCNIDir string

	// RateLimiter paces the retries of a pod; nil means DefaultRateLimiter.
	RateLimiter workqueue.TypedRateLimiter[Key]
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Controller programs the mesh pods of one node.
type Controller struct {
	nodeName      string
	waitContainer string
	driftPeriod   time.Duration
	workers       int

	client   kubernetes.Interface
	lister   corelisters.PodLister
	synced   cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[Key]
	finder   Finder
	applier  Applier
	recorder record.EventRecorder
	metrics  *Metrics
	now      func() time.Time

	// driftGen counts drift rounds; a released pod verified in the current round is not verified
	// again on an unrelated event.
	driftGen atomic.Uint64
	ready    atomic.Bool

	// claims: which live pod each released-into namespace belongs to.
	claims *claims
	// budget paces the patches and Events that report refusals and problems (budget.go).
	budget *reportBudget
	// records writes the release record (nil: off); local and localDir are local discovery (nil: off).
	records  RecordWriter
	local    *localSandboxes
	localDir string

	mu   sync.Mutex
	pods map[Key]*podState
	seen map[types.UID]time.Time // first sight with an IP, for the setup latency; zero once observed
	// written is our annotations as last patched, per pod: the cache may not show them yet, and
	// the update our own patch causes is not work.
	written map[types.UID]annotations
}

// podState is what the controller remembers of one pod. Only the worker holding the pod's key
// reads or writes it.
type podState struct {
	uid types.UID
	// released is the rule set the pod was released with: drift repair restores it.
	released *release
	// verified is the last successful check, skipped until the next drift round.
	verified verification
	// settled is the last reconcile that left the pod released with verified rules: an event in
	// the same drift round for the same inputs has nothing to do (see upToDate).
	settled settled
	// failedFP is the fingerprint of the inputs the pod was refused for.
	failedFP string
	// specChanged is the configuration a SpecChanged Event was emitted for.
	specChanged string
	// waitContainerID is the running wait container seen last; a new one means a new sandbox may exist.
	waitContainerID string
	// reasons are the Warning Events sent for the pod (reason and message): each is sent once.
	reasons map[string]struct{}
}

type release struct {
	cfg   *rules.Config
	hash  string
	netns string
}

type verification struct {
	netns, hash string
	gen         uint64
}

// settled: in drift round gen, the pod with inputs of fingerprint fp was left annotated ann (ready),
// its namespace holding the verified rules.
type settled struct {
	gen uint64
	fp  string
	ann annotations
}

// New creates the controller and registers its event handlers on opts.Pods.
func New(opts Options) (*Controller, error) {
	switch {
	case opts.NodeName == "":
		return nil, errors.New("controller: node name is required")
	case opts.Client == nil || opts.Pods == nil || opts.Finder == nil || opts.Applier == nil || opts.Recorder == nil:
		return nil, errors.New("controller: client, pod informer, finder, applier and recorder are required")
	}
	c := &Controller{
		nodeName:      opts.NodeName,
		waitContainer: opts.WaitContainerName,
		driftPeriod:   opts.DriftPeriod,
		workers:       opts.Workers,
		client:        opts.Client,
		lister:        opts.Pods.Lister(),
		finder:        opts.Finder,
		applier:       opts.Applier,
		recorder:      opts.Recorder,
		metrics:       opts.Metrics,
		now:           opts.Now,
		claims:        newClaims(),
		records:       opts.Records,
		pods:          map[Key]*podState{},
		seen:          map[types.UID]time.Time{},
		written:       map[types.UID]annotations{},
	}
	if c.waitContainer == "" {
		c.waitContainer = DefaultWaitContainerName
	}
	if opts.LocalCNIDir != "" {
		c.local, c.localDir = newLocalSandboxes(), opts.LocalCNIDir
	}
	if c.driftPeriod <= 0 {
		c.driftPeriod = DefaultDriftPeriod
	}
	if c.workers <= 0 {
		c.workers = DefaultWorkers
	}
	if c.metrics == nil {
		c.metrics = NewMetrics()
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.budget = newReportBudget(c.now())
	rl := opts.RateLimiter
	if rl == nil {
		rl = DefaultRateLimiter()
	}
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(rl, workqueue.TypedRateLimitingQueueConfig[Key]{
		Name: "pods", MetricsProvider: c.metrics.queue,
	})
	if opts.OpenNamespaces != nil {
		c.metrics.gauge("netns_open_fds", "Network namespace file descriptors held open.",
			func() float64 { return float64(opts.OpenNamespaces()) })
	}
	reg, err := opts.Pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.onAdd,
		UpdateFunc: c.onUpdate,
		DeleteFunc: c.onDelete,
	})
	if err != nil {
		return nil, fmt.Errorf("controller: pod event handler: %w", err)
	}
	c.synced = reg.HasSynced
	return c, nil
}

// DefaultRateLimiter retries a pod after 20 ms, doubling up to 30 s, and all pods together at 50
// per second (bursts of 300).
func DefaultRateLimiter() workqueue.TypedRateLimiter[Key] {
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[Key](20*time.Millisecond, 30*time.Second),
		&workqueue.TypedBucketRateLimiter[Key]{Limiter: rate.NewLimiter(rate.Limit(50), 300)},
	)
}

// Ready reports whether the pod cache has synced and the workers run.
func (c *Controller) Ready() bool { return c.ready.Load() }

// Run waits for the pod cache, rebuilds the namespace claims from the released pods, reconciles
// every local pod (the informer's initial list), starts the workers and the drift check, and blocks until ctx is done. Then it stops taking work, lets the
// in-flight operations finish (their own context is not cancelled), and returns.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrashWithContext(ctx)
	logger := klog.FromContext(ctx)
	logger.Info("Waiting for the pod cache", "node", c.nodeName)
	if !cache.WaitForNamedCacheSyncWithContext(ctx, c.synced) {
		c.queue.ShutDown()
		if ctx.Err() != nil {
			return nil // stopped before the cache synced: nothing in flight
		}
		return errors.New("pod cache did not sync")
	}
	if err := c.rebuildClaims(ctx); err != nil {
		c.queue.ShutDown()
		return err
	}
	var wg sync.WaitGroup
	for range c.workers {
		wg.Go(func() {
			for c.processNextItem(ctx) {
			}
		})
	}
	wg.Go(func() { c.driftLoop(ctx) })
	if c.local != nil {
		wg.Go(func() { c.watchLocal(ctx) })
	}
	c.ready.Store(true)
	logger.Info("Controller ready", "workers", c.workers, "driftPeriod", c.driftPeriod)

	<-ctx.Done()
	c.ready.Store(false)
	logger.Info("Shutting down: finishing in-flight work")
	c.queue.ShutDownWithDrain()
	wg.Wait()
	logger.Info("Shut down")
	return nil
}

// processNextItem handles one key; false when the queue is shut down.
func (c *Controller) processNextItem(ctx context.Context) bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	if ctx.Err() != nil {
		return true // shutting down: leave queued work to the next instance
	}
	opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), syncTimeout)
	defer cancel()
	if err := c.sync(opCtx, key); err != nil {
		logger, ref, n := klog.FromContext(ctx), klog.KRef(key.Namespace, key.Name), c.queue.NumRequeues(key)
		if expectedRetry(err) {
			logger.V(2).Info("Will retry", "pod", ref, "retries", n, "reason", err.Error())
		} else {
			logger.Error(err, "Will retry", "pod", ref, "retries", n)
		}
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// expectedRetry reports whether err is a condition every pod goes through and that resolves by
// itself (its sandbox's namespace not there yet): logged at V(2), not as an error.
func expectedRetry(err error) bool { return errors.Is(err, netns.ErrNotFound) }

// driftLoop starts a drift round every period: released pods are queued and verified again.
func (c *Controller) driftLoop(ctx context.Context) {
	t := time.NewTicker(c.driftPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.driftRound(ctx)
		}
	}
}

// driftRound queues every released pod for verification.
func (c *Controller) driftRound(ctx context.Context) {
	c.driftGen.Add(1)
	pods, err := c.lister.List(labels.Everything())
	if err != nil {
		klog.FromContext(ctx).Error(err, "Drift check: listing pods")
		return
	}
	n := 0
	for _, pod := range pods {
		if c.candidate(pod) && ours(pod).status() == contract.StatusReady {
			c.queue.Add(Key{Namespace: pod.Namespace, Name: pod.Name})
			n++
		}
	}
	klog.FromContext(ctx).V(4).Info("Drift check queued", "pods", n)
}

// Event handlers: they filter and enqueue, nothing else.

func (c *Controller) onAdd(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || !c.candidate(pod) {
		return
	}
	c.noteSeen(pod)
	c.queue.Add(Key{Namespace: pod.Namespace, Name: pod.Name})
}

func (c *Controller) onUpdate(oldObj, newObj any) {
	old, ok1 := oldObj.(*corev1.Pod)
	pod, ok2 := newObj.(*corev1.Pod)
	if !ok1 || !ok2 || !c.candidate(pod) || !c.relevantChange(old, pod) || c.ownPatch(old, pod) {
		return
	}
	c.noteSeen(pod)
	c.queue.Add(Key{Namespace: pod.Namespace, Name: pod.Name})
}

func (c *Controller) onDelete(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	if pod, ok := obj.(*corev1.Pod); ok && c.candidate(pod) {
		c.queue.Add(Key{Namespace: pod.Namespace, Name: pod.Name})
	}
}

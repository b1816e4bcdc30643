package controller

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/types"
)

// The report budget: each refusal or transient problem the controller reports costs a pods/status
// patch and an Event. A pod that keeps flipping its annotations between refused values, or many
// such pods, must not spend the node's API budget (the QPS the pods being programmed need), so
// reports are paced per pod and for the whole node; a report past the budget is deferred (the pod
// is requeued for when the budget has room, and the annotation then says the latest reason). The
// pod is never released meanwhile: deferring changes only how soon a refusal is visible. See
// docs/install.md, "Hardened install".
const (
	// podReportBurst reports at once, then one per podReportEvery: at most 5 + 5 a minute per pod.
	podReportBurst = 5
	podReportEvery = 12 * time.Second
	// nodeReportBurst reports at once, then one per nodeReportEvery for all pods: at most
	// 100 + 120 a minute per node.
	nodeReportBurst = 100
	nodeReportEvery = 500 * time.Millisecond
	// maxBudgetedPods bounds the per-pod budgets kept (a full one is forgotten first; beyond this,
	// only the node budget applies).
	maxBudgetedPods = 4096
)

// reportBudget is a token bucket per pod and one for the node.
type reportBudget struct {
	mu   sync.Mutex
	node *rate.Limiter
	pods map[types.UID]*rate.Limiter
}

func newReportBudget(now time.Time) *reportBudget {
	node := rate.NewLimiter(rate.Every(nodeReportEvery), nodeReportBurst)
	node.AllowN(now, 0) // start the bucket's clock at now (a fake clock in tests)
	return &reportBudget{node: node, pods: map[types.UID]*rate.Limiter{}}
}

// allow spends one report of the pod at now, or returns how long until one is available.
func (b *reportBudget) allow(uid types.UID, now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	pod := b.podLimiter(uid, now)
	wait := untilToken(b.node, now)
	if pod != nil {
		wait = max(wait, untilToken(pod, now))
	}
	if wait > 0 {
		return false, wait
	}
	b.node.AllowN(now, 1)
	if pod != nil {
		pod.AllowN(now, 1)
	}
	return true, 0
}

// podLimiter returns the pod's bucket, made full when new; nil when maxBudgetedPods pods hold
// partly spent buckets.
func (b *reportBudget) podLimiter(uid types.UID, now time.Time) *rate.Limiter {
	if l, ok := b.pods[uid]; ok {
		return l
	}
	if len(b.pods) >= maxBudgetedPods {
		for k, l := range b.pods {
			if l.TokensAt(now) >= podReportBurst {
				delete(b.pods, k) // a full bucket is what a new one would be
			}
		}
		if len(b.pods) >= maxBudgetedPods {
			return nil
		}
	}
	l := rate.NewLimiter(rate.Every(podReportEvery), podReportBurst)
	l.AllowN(now, 0)
	b.pods[uid] = l
	return l
}

// untilToken is how long from now until l holds one token.
func untilToken(l *rate.Limiter, now time.Time) time.Duration {
	missing := 1 - l.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing / float64(l.Limit()) * float64(time.Second))
}

// needsPatch reports whether making the pod's annotations of ours want takes a patch: the cache
// or what this process last wrote differs from want.
func (c *Controller) needsPatch(uid types.UID, cur, want annotations) bool {
	w := c.lastWritten(uid)
	return !cur.equal(want) || (w != nil && !w.equal(want))
}

// reportAllowed reports whether the run may report want (a patch and an Event) now. When the
// budget is spent it counts the deferral and, if requeue, queues the pod for when the budget has
// room (a retry is requeued by its error anyway).
func (r *podRun) reportAllowed(want annotations, requeue bool) bool {
	c := r.c
	if !c.needsPatch(r.pod.UID, r.cur, want) {
		return true // nothing to send
	}
	ok, wait := c.budget.allow(r.pod.UID, c.now())
	if ok {
		return true
	}
	c.metrics.ReportsDeferred.Inc()
	r.logger().V(2).Info("Report deferred: the pod's or the node's report budget is spent", "status", want.status(), "retryAfter", wait)
	if requeue {
		c.queue.AddAfter(Key{Namespace: r.pod.Namespace, Name: r.pod.Name}, wait)
	}
	return false
}

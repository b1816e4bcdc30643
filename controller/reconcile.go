package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// fieldManager names the controller in the pods' managedFields.
const fieldManager = "istio-pod-network-controller"

// errPodGone: the pod was deleted while being worked on (a success).
var errPodGone = errors.New("pod is gone")

// sync reconciles the pod of key with the informer cache as its only API input.
func (c *Controller) sync(ctx context.Context, key Key) error {
	logger := klog.LoggerWithValues(klog.FromContext(ctx), "pod", klog.KRef(key.Namespace, key.Name))
	ctx = klog.NewContext(ctx, logger)
	cached, err := c.lister.Pods(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		c.forget(ctx, key)
		return nil
	}
	if err != nil {
		return err
	}
	c.claims.drop(key, cached.UID) // an earlier pod of this name is gone
	st := c.state(ctx, key, cached.UID)
	if !holdsClaim(cached, c.nodeName) {
		c.claims.drop(key, "")
	}
	if why := c.skipped(cached); why != "" {
		logger.V(5).Info("Not working on pod", "why", why)
		return nil
	}
	err = c.reconcile(ctx, cached.DeepCopy(), st)
	if errors.Is(err, errPodGone) {
		return nil
	}
	return err
}

// podRun is one reconcile of one pod: the pod (a private copy), what the controller remembers of
// it, its annotations of ours as the cache shows them, what its configuration asks for and the
// fingerprint of its inputs.
type podRun struct {
	c   *Controller
	ctx context.Context
	pod *corev1.Pod
	st  *podState
	cur annotations
	sp  spec
	fp  string
	// ns is the pod's namespace once open returned it (the release record is written there).
	ns Namespace
	// backend programs, checks and repairs the pod (see backendOf).
	backend contract.Backend
	// started is when the reconcile began (for the Programmed line's durations).
	started time.Time
}

func (r *podRun) logger() klog.Logger { return klog.FromContext(r.ctx) }
func (r *podRun) key() string         { return string(r.pod.UID) }

// reconcile brings one pod (a private copy) to its desired state.
func (c *Controller) reconcile(ctx context.Context, pod *corev1.Pod, st *podState) error {
	r := &podRun{c: c, ctx: ctx, pod: pod, st: st, cur: ours(pod), fp: fingerprint(pod), started: c.now()}
	if c.upToDate(pod, st, r.cur, r.fp) && !c.localNewer(pod.UID) {
		r.logger().V(5).Info("Released and verified in this drift round for the same inputs: nothing to do")
		return nil
	}
	backend, err := c.backendOf(r.cur)
	if err != nil {
		r.warnOnce(EventCheckFailed, truncate("released pod: "+err.Error()))
		return fmt.Errorf("released pod: %w", err) // nothing is touched
	}
	r.backend = backend
	r.sp = evaluate(pod, r.hint(), backend)
	if r.cur.status() == contract.StatusReady {
		return r.reconcileReleased()
	}
	switch {
	case r.sp.refused != nil:
		return r.refuse(r.sp.event, r.sp.metric, r.sp.refused.Error())
	case r.sp.transient != nil:
		return r.retry(reasonConfig, r.sp.transient)
	case r.cur.status() == contract.StatusFailed && st.failedFP == r.fp:
		return nil // refused for these very inputs already (rules in the other backend)
	}
	ns, id, err := r.open()
	if err != nil {
		return r.retry(reasonOf(err), err)
	}
	defer ns.Close()
	return r.program(ns, id)
}

// upToDate reports whether the outcome of reconciling the pod is already known: in the current
// drift round, a reconcile left it released with verified rules, and nothing it depends on has
// changed since: its inputs (fingerprint: annotations other than ours, istio-proxy, init
// containers, pod IPs), our annotations (netns identity, rules hash), and no new run of the wait
// container (which would mean a new sandbox). Then the namespace need not be looked up again: the
// drift round (a new generation) does that, and any change of the above brings the full reconcile
// back. The typical case is the wait container exiting and the pod starting after its release.
func (c *Controller) upToDate(pod *corev1.Pod, st *podState, cur annotations, fp string) bool {
	s := st.settled
	if s.ann == nil || s.gen != c.driftGen.Load() || s.fp != fp || !s.ann.equal(cur) || cur.status() != contract.StatusReady {
		return false
	}
	id := waitRunning(pod, c.waitContainer)
	return id == "" || id == st.waitContainerID
}

// settle records that the pod is released with verified rules in drift round gen, annotated ann.
func (st *podState) settle(gen uint64, fp string, ann annotations) {
	st.settled = settled{gen: gen, fp: fp, ann: ann}
}

// program applies the configuration in ns and releases the pod.
func (r *podRun) program(ns Namespace, id contract.NetnsID) error {
	c := r.c
	foreign, err := r.applier().Foreign(r.ctx, ns, r.key())
	if err != nil {
		return r.retry(reasonForeignCheck, fmt.Errorf("look for rules of another backend: %w", err))
	}
	if foreign != "" {
		return r.refuse(EventForeignRules, reasonForeign, foreign)
	}
	gen := c.driftGen.Load() // before Apply, whose read-back is the verification
	applied := c.now()
	res, err := r.apply(ns, r.sp.cfg)
	if fe := (*ForeignRulesError)(nil); errors.As(err, &fe) {
		return r.refuse(EventForeignRules, reasonForeign, fe.Reason)
	}
	if err != nil {
		return r.retry(applyReason(err), err)
	}
	verified := c.now()
	if err := r.release(id, r.sp.cfg, res, gen); err != nil {
		return err
	}
	released := c.now()
	r.st.failedFP, r.st.specChanged = "", ""
	c.metrics.PodsConfigured.WithLabelValues(resultReady).Inc()
	c.observeSetup(r.pod.UID)
	// find: from the start of the reconcile to the namespace found, proven and checked; apply: the
	// rules applied and read back; release: the release record and the annotation patch.
	r.logger().Info("Programmed", "netns", id.String(), "path", ns.Path(), "rules", res.Hash, "families", res.Families, "changed", res.Changed,
		"find", applied.Sub(r.started).Round(time.Microsecond), "apply", verified.Sub(applied).Round(time.Microsecond),
		"release", released.Sub(verified).Round(time.Microsecond))
	c.recorder.Eventf(r.pod, corev1.EventTypeNormal, EventProgrammed,
		"Programmed network namespace %s (%s): rules %s, families %s", id, ns.Path(), res.Hash, res.Families)
	return nil
}

// release annotates the pod released into namespace id with the verified rules res of cfg (one
// patch, when they differ), then records it: the rule set it was released with, verified in drift
// round gen, settled, and the namespace claimed for it.
func (r *podRun) release(id contract.NetnsID, cfg *rules.Config, res netsetup.Result, gen uint64) error {
	want := ready(id, res, r.backend)
	r.writeRecord(id, res) // before the patch: released even when the API server is unreachable
	if _, err := r.c.ensure(r.ctx, r.pod, r.cur, want); err != nil {
		return err
	}
	r.cur = want
	r.st.released = &release{cfg: cfg, hash: res.Hash, netns: id.String()}
	r.st.verified = verification{netns: id.String(), hash: res.Hash, gen: gen}
	r.st.settle(gen, r.fp, want)
	r.c.claims.claim(id.String(), Key{Namespace: r.pod.Namespace, Name: r.pod.Name}, r.pod.UID) // open checked it is free
	return nil
}

// retry puts a transient problem on the pod (status pending with the reason, patched only when
// the reason changes; a Warning Event once per distinct reason) and returns err, so the key is
// retried with backoff.
func (r *podRun) retry(metric string, err error) error {
	r.c.metrics.Errors.WithLabelValues(metric).Inc()
	msg := truncate(err.Error())
	if !r.reportAllowed(pending(msg), false) {
		return err // reported when the report budget has room (budget.go)
	}
	if _, perr := r.c.ensure(r.ctx, r.pod, r.cur, pending(msg)); perr != nil {
		return errors.Join(err, perr)
	}
	r.warnOnce(EventPending, msg)
	return err
}

// warnOnce emits a Warning Event with msg unless one with the same text was emitted for the pod.
func (r *podRun) warnOnce(reason, msg string) {
	if r.st.noteReason(reason + ": " + msg) {
		r.c.recorder.Event(r.pod, corev1.EventTypeWarning, reason, msg)
	}
}

// maxReasons bounds the distinct reasons remembered per pod; past it no more such Events are sent.
const maxReasons = 32

// noteReason records a reason and reports whether it is new (and an Event for it may be sent).
func (st *podState) noteReason(r string) bool {
	if _, ok := st.reasons[r]; ok || len(st.reasons) >= maxReasons {
		return false
	}
	if st.reasons == nil {
		st.reasons = map[string]struct{}{}
	}
	st.reasons[r] = struct{}{}
	return true
}

// refuse marks the pod failed with the reason (patched, with a Warning Event, when it changes) and
// does not retry: the pod's own configuration must change first.
func (r *podRun) refuse(event, metric, msg string) error {
	st := r.st
	st.failedFP = r.fp
	st.released, st.verified, st.settled = nil, verification{}, settled{}
	if r.ns != nil {
		if err := r.clearRecord(r.ns); err != nil { // refused in an open namespace: no record says ready
			return err
		}
	}
	if !r.reportAllowed(failed(msg), true) {
		return nil // reported when the report budget has room (budget.go)
	}
	patched, err := r.c.ensure(r.ctx, r.pod, r.cur, failed(msg))
	if err != nil {
		return err
	}
	if patched {
		r.c.metrics.Errors.WithLabelValues(metric).Inc()
		r.c.metrics.PodsConfigured.WithLabelValues(resultFailed).Inc()
		r.logger().Info("Refused", "reason", event, "message", msg)
		r.c.recorder.Event(r.pod, corev1.EventTypeWarning, event, truncate(msg))
	}
	return nil
}

// ensure makes the pod's annotations of ours equal want with one merge patch through pods/status,
// only when the cache or what this process last wrote differs from want. It reports whether it
// patched.
func (c *Controller) ensure(ctx context.Context, pod *corev1.Pod, cur, want annotations) (bool, error) {
	if w := c.lastWritten(pod.UID); cur.equal(want) && (w == nil || w.equal(want)) {
		return false, nil
	}
	_, err := c.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, want.patch(),
		metav1.PatchOptions{FieldManager: fieldManager}, "status")
	if apierrors.IsNotFound(err) {
		return false, errPodGone
	}
	if err != nil {
		c.metrics.Errors.WithLabelValues(reasonPatch).Inc()
		return false, fmt.Errorf("patch the pod's annotations: %w", err)
	}
	c.setWritten(pod.UID, want)
	return true, nil
}

func (r *podRun) apply(ns Namespace, cfg *rules.Config) (netsetup.Result, error) {
	start := r.c.now()
	res, err := r.applier().Apply(r.ctx, ns, r.key(), cfg)
	r.c.metrics.ApplyDuration.Observe(r.c.now().Sub(start).Seconds())
	if err != nil {
		r.dropRecord(ns) // a failed apply leaves no record
	}
	return res, err
}

func (r *podRun) verify(ns Namespace, cfg *rules.Config) error {
	start := r.c.now()
	_, err := r.applier().Verify(r.ctx, ns, r.key(), cfg)
	r.c.metrics.VerifyDuration.Observe(r.c.now().Sub(start).Seconds())
	return err
}

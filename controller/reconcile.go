package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// Event reasons.
const (
	EventProgrammed               = "Programmed"               // Normal: namespace programmed, pod released
	EventSandboxRecreated         = "SandboxRecreated"         // Normal: a new namespace for a released pod
	EventPending                  = "Pending"                  // Warning: transient problem, retrying
	EventInvalidConfiguration     = "InvalidConfiguration"     // Warning: refused (failed)
	EventConflictingInitContainer = "ConflictingInitContainer" // Warning: refused (failed)
	EventForeignRules             = "ForeignRules"             // Warning: refused (failed)
	EventDriftRepaired            = "DriftRepaired"            // Warning: live rules restored
	EventSpecChanged              = "SpecChanged"              // Warning: configuration edited after release
)

// Reasons of the errors_total metric.
const (
	reasonInvalidConfig = "invalid_configuration"
	reasonConflict      = "conflicting_init_container"
	reasonForeign       = "foreign_rules"
	reasonConfig        = "config"
	reasonNotFound      = "namespace_not_found"
	reasonAmbiguous     = "namespace_ambiguous"
	reasonHostNamespace = "host_namespace"
	reasonDiscovery     = "discovery"
	reasonIdentity      = "netns_identity"
	reasonForeignCheck  = "foreign_rules_check"
	reasonApply         = "apply"
	reasonLocked        = "xtables_lock"
	reasonVerify        = "verify"
	reasonPatch         = "patch"
)

// errorReasons lists every reason of errors_total (exported at 0 from the start).
var errorReasons = []string{reasonInvalidConfig, reasonConflict, reasonForeign, reasonConfig, reasonNotFound,
	reasonAmbiguous, reasonHostNamespace, reasonDiscovery, reasonIdentity, reasonForeignCheck, reasonApply,
	reasonLocked, reasonVerify, reasonPatch}

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
	st := c.state(ctx, key, cached.UID)
	if why := skipReason(cached, c.nodeName, c.waitContainer); why != "" {
		logger.V(5).Info("Not working on pod", "why", why)
		return nil
	}
	err = c.reconcile(ctx, cached.DeepCopy(), st)
	if errors.Is(err, errPodGone) {
		return nil
	}
	return err
}

// spec is what the pod's current configuration asks for: a configuration and its rules' hash, or
// why it is refused (permanent until the pod changes), or a transient error.
type spec struct {
	cfg       *rules.Config
	hash      string
	refused   error
	event     string // Event reason when refused
	metric    string // errors_total reason when refused
	transient error
}

func evaluate(pod *corev1.Pod) spec {
	if name := conflictingInit(pod); name != "" {
		return spec{refused: fmt.Errorf("the pod also has the init container %q, which installs or checks Istio's rules itself: "+
			"two rule sets would both be live (use the injection template of istio-pod-network-controller)", name),
			event: EventConflictingInitContainer, metric: reasonConflict}
	}
	cfg, err := podconfig.FromPod(pod)
	if errors.Is(err, podconfig.ErrInvalid) {
		return spec{refused: err, event: EventInvalidConfiguration, metric: reasonInvalidConfig}
	} else if err != nil {
		return spec{transient: fmt.Errorf("pod configuration: %w", err)}
	}
	rs, err := rules.Generate(cfg)
	if err != nil {
		return spec{refused: fmt.Errorf("rules: %w", err), event: EventInvalidConfiguration, metric: reasonInvalidConfig}
	}
	return spec{cfg: cfg, hash: rs.Hash()}
}

// describe names what the configuration asks for, in messages.
func (sp spec) describe() string {
	if sp.refused != nil {
		return "refused: " + sp.refused.Error()
	}
	if sp.transient != nil {
		return "unknown: " + sp.transient.Error()
	}
	return "rules " + sp.hash
}

// reconcile brings one pod (a private copy) to its desired state.
func (c *Controller) reconcile(ctx context.Context, pod *corev1.Pod, st *podState) error {
	cur := ours(pod)
	fp := fingerprint(pod)
	if c.upToDate(pod, st, cur, fp) {
		klog.FromContext(ctx).V(5).Info("Released and verified in this drift round for the same inputs: nothing to do")
		return nil
	}
	sp := evaluate(pod)
	if cur.status() == contract.StatusReady {
		return c.reconcileReleased(ctx, pod, st, cur, sp, fp)
	}
	switch {
	case sp.refused != nil:
		return c.refuse(ctx, pod, st, fp, sp.event, sp.metric, sp.refused.Error())
	case sp.transient != nil:
		return c.retry(ctx, pod, st, reasonConfig, sp.transient)
	case cur.status() == contract.StatusFailed && st.failedFP == fp:
		return nil // refused for these very inputs already (rules in the other backend)
	}
	ns, err := c.find(ctx, pod, st, cur)
	if err != nil {
		return c.retry(ctx, pod, st, findReason(err), err)
	}
	defer ns.Close()
	id, err := ns.ID()
	if err != nil {
		return c.retry(ctx, pod, st, reasonIdentity, err)
	}
	return c.program(ctx, pod, st, ns, id, sp, fp)
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

// reconcileReleased handles a pod annotated ready: same namespace -> check (and repair) the
// released rules; new namespace (sandbox re-created) -> program it.
func (c *Controller) reconcileReleased(ctx context.Context, pod *corev1.Pod, st *podState, cur annotations, sp spec, fp string) error {
	logger := klog.FromContext(ctx)
	ns, err := c.find(ctx, pod, st, cur)
	if err != nil {
		// The annotations stay: the wait container of a new sandbox refuses them anyway.
		c.metrics.Errors.WithLabelValues(findReason(err)).Inc()
		return fmt.Errorf("released pod: %w", err)
	}
	defer ns.Close()
	id, err := ns.ID()
	if err != nil {
		c.metrics.Errors.WithLabelValues(reasonIdentity).Inc()
		return fmt.Errorf("released pod: %w", err)
	}
	if id.String() == cur[contract.KeyNetns] {
		return c.checkReleased(ctx, pod, st, ns, id, cur, sp, fp)
	}
	logger.Info("Sandbox re-created: programming the new network namespace", "oldNetns", cur[contract.KeyNetns], "netns", id.String(), "path", ns.Path())
	c.recorder.Eventf(pod, corev1.EventTypeNormal, EventSandboxRecreated,
		"Network namespace changed from %s to %s (%s): programming the new one", cur[contract.KeyNetns], id, ns.Path())
	st.released, st.verified, st.settled = nil, verification{}, settled{}
	switch {
	case sp.refused != nil:
		return c.refuse(ctx, pod, st, fp, sp.event, sp.metric, sp.refused.Error())
	case sp.transient != nil:
		return c.retry(ctx, pod, st, reasonConfig, sp.transient)
	}
	return c.program(ctx, pod, st, ns, id, sp, fp)
}

// checkReleased verifies a released pod's live rules against the rule set it was released with.
func (c *Controller) checkReleased(ctx context.Context, pod *corev1.Pod, st *podState, ns Namespace, id contract.NetnsID, cur annotations, sp spec, fp string) error {
	rel := st.released
	if rel == nil || rel.netns != id.String() || rel.hash != cur[contract.KeyRules] {
		if sp.cfg == nil || sp.hash != cur[contract.KeyRules] {
			return c.releasedUnknown(ctx, pod, st, ns, id, cur, sp, fp)
		}
		// Not released by this process (it restarted): the current configuration hashes to the
		// released rules, so it is the released rule set.
		rel = &release{cfg: sp.cfg, hash: sp.hash, netns: id.String()}
		st.released = rel
	}
	if sp.hash != rel.hash {
		c.specChanged(ctx, pod, st, rel.hash, sp)
	}
	done := verification{netns: id.String(), hash: rel.hash, gen: c.driftGen.Load()}
	if st.verified == done {
		st.settle(done.gen, fp, cur)
		return nil
	}
	err := c.verify(ctx, pod, ns, rel.cfg)
	switch {
	case err == nil:
		st.verified = done
		st.settle(done.gen, fp, cur)
		return nil
	case !errors.Is(err, netsetup.ErrDrift):
		c.metrics.Errors.WithLabelValues(reasonVerify).Inc()
		return fmt.Errorf("verify the released rules: %w", err)
	}
	klog.FromContext(ctx).Info("Rules drifted: restoring the released rule set", "netns", id.String(), "rules", rel.hash, "drift", err.Error())
	res, aerr := c.apply(ctx, pod, ns, rel.cfg)
	if aerr != nil {
		c.metrics.Errors.WithLabelValues(applyReason(aerr)).Inc()
		return fmt.Errorf("restore the released rules: %w", aerr)
	}
	c.metrics.DriftRepairs.Inc()
	drift, _, _ := strings.Cut(err.Error(), "\n") // the full difference is in the log
	c.recorder.Event(pod, corev1.EventTypeWarning, EventDriftRepaired, truncate(fmt.Sprintf(
		"Rules in network namespace %s had drifted: restored the released rule set %s (%s)", id, rel.hash, drift)))
	want := ready(id, res)
	if _, err := c.ensure(ctx, pod, cur, want); err != nil {
		return err
	}
	st.verified = done
	st.settle(done.gen, fp, want)
	return nil
}

// releasedUnknown handles a released pod whose released rule set this process does not know: it
// restarted, and the configuration changed since release (or is now refused). Rules are fixed at
// release, so live rules are left alone; only when they vanished entirely are the current
// configuration's rules applied (and the annotations updated).
func (c *Controller) releasedUnknown(ctx context.Context, pod *corev1.Pod, st *podState, ns Namespace, id contract.NetnsID, cur annotations, sp spec, fp string) error {
	logger := klog.FromContext(ctx)
	c.specChanged(ctx, pod, st, cur[contract.KeyRules], sp)
	done := verification{netns: id.String(), hash: cur[contract.KeyRules], gen: c.driftGen.Load()}
	if st.verified == done {
		st.settle(done.gen, fp, cur)
		return nil
	}
	if sp.cfg != nil {
		err := c.verify(ctx, pod, ns, sp.cfg)
		if err == nil {
			// The live rules are the current configuration's: only the annotations lag behind.
			want := ready(id, netsetup.Result{Hash: sp.hash, Families: families(sp.cfg)})
			if _, err := c.ensure(ctx, pod, cur, want); err != nil {
				return err
			}
			st.released = &release{cfg: sp.cfg, hash: sp.hash, netns: id.String()}
			st.verified = verification{netns: id.String(), hash: sp.hash, gen: done.gen}
			st.settle(done.gen, fp, want)
			return nil
		}
		if !errors.Is(err, netsetup.ErrDrift) {
			c.metrics.Errors.WithLabelValues(reasonVerify).Inc()
			return fmt.Errorf("verify the live rules: %w", err)
		}
	}
	programmed, err := c.applier.Programmed(ctx, ns, string(pod.UID))
	if err != nil {
		c.metrics.Errors.WithLabelValues(reasonVerify).Inc()
		return fmt.Errorf("read the live rules: %w", err)
	}
	if programmed {
		logger.V(2).Info("Released rule set unknown since the configuration changed after release: leaving the live rules alone",
			"netns", id.String(), "released", cur[contract.KeyRules], "now", sp.describe())
		st.verified = done
		st.settle(done.gen, fp, cur)
		return nil
	}
	if sp.cfg == nil {
		return c.refuse(ctx, pod, st, fp, sp.event, sp.metric, fmt.Sprintf(
			"the rules vanished from network namespace %s and the pod's current configuration is %s", id, sp.describe()))
	}
	res, err := c.apply(ctx, pod, ns, sp.cfg)
	if err != nil {
		c.metrics.Errors.WithLabelValues(applyReason(err)).Inc()
		return fmt.Errorf("apply the current rules: %w", err)
	}
	c.metrics.DriftRepairs.Inc()
	c.recorder.Eventf(pod, corev1.EventTypeWarning, EventDriftRepaired,
		"Rules had vanished from network namespace %s; the released rule set %s is unknown since the configuration changed: applied the current configuration's rules %s",
		id, cur[contract.KeyRules], res.Hash)
	want := ready(id, res)
	if _, err := c.ensure(ctx, pod, cur, want); err != nil {
		return err
	}
	st.released = &release{cfg: sp.cfg, hash: res.Hash, netns: id.String()}
	st.verified = verification{netns: id.String(), hash: res.Hash, gen: done.gen}
	st.settle(done.gen, fp, want)
	return nil
}

// specChanged reports, once per new configuration, that a released pod's configuration changed.
func (c *Controller) specChanged(ctx context.Context, pod *corev1.Pod, st *podState, released string, sp spec) {
	now := sp.describe()
	if st.specChanged == now {
		return
	}
	st.specChanged = now
	c.metrics.SpecChanges.Inc()
	klog.FromContext(ctx).Info("Traffic configuration changed after release: not applied", "released", released, "now", now)
	c.recorder.Event(pod, corev1.EventTypeWarning, EventSpecChanged, truncate(fmt.Sprintf(
		"The pod's traffic configuration changed after its rules were released (released rules %s, now %s); "+
			"rules are fixed at release: restart the pod to apply the change", released, now)))
}

// program applies the configuration in ns and releases the pod.
func (c *Controller) program(ctx context.Context, pod *corev1.Pod, st *podState, ns Namespace, id contract.NetnsID, sp spec, fp string) error {
	key := string(pod.UID)
	foreign, err := c.applier.ForeignRules(ctx, ns, key)
	if err != nil {
		return c.retry(ctx, pod, st, reasonForeignCheck, fmt.Errorf("look for rules in the other iptables backend: %w", err))
	}
	if foreign {
		return c.refuse(ctx, pod, st, fp, EventForeignRules, reasonForeign, fmt.Sprintf(
			"network namespace %s already holds ISTIO_* chains in the other iptables backend: two rule sets would both be live "+
				"(is istio-init or Istio's CNI also programming this pod?)", ns.Path()))
	}
	gen := c.driftGen.Load() // before Apply, whose read-back is the verification
	res, err := c.apply(ctx, pod, ns, sp.cfg)
	if err != nil {
		return c.retry(ctx, pod, st, applyReason(err), err)
	}
	want := ready(id, res)
	if _, err := c.ensure(ctx, pod, ours(pod), want); err != nil {
		return err
	}
	st.released = &release{cfg: sp.cfg, hash: res.Hash, netns: id.String()}
	st.verified = verification{netns: id.String(), hash: res.Hash, gen: gen}
	st.settle(gen, fp, want)
	st.failedFP, st.specChanged = "", ""
	c.metrics.PodsConfigured.WithLabelValues(resultReady).Inc()
	c.observeSetup(pod.UID)
	klog.FromContext(ctx).Info("Programmed", "netns", id.String(), "path", ns.Path(), "rules", res.Hash, "families", res.Families, "changed", res.Changed)
	c.recorder.Eventf(pod, corev1.EventTypeNormal, EventProgrammed,
		"Programmed network namespace %s (%s): rules %s, families %s", id, ns.Path(), res.Hash, res.Families)
	return nil
}

// retry puts a transient problem on the pod (status pending with the reason; patched, with a
// Warning Event, only when the reason changes) and returns err, so the key is retried with backoff.
func (c *Controller) retry(ctx context.Context, pod *corev1.Pod, st *podState, metric string, err error) error {
	c.metrics.Errors.WithLabelValues(metric).Inc()
	patched, perr := c.ensure(ctx, pod, ours(pod), pending(err.Error()))
	if perr != nil {
		return errors.Join(err, perr)
	}
	if patched {
		c.recorder.Event(pod, corev1.EventTypeWarning, EventPending, truncate(err.Error()))
	}
	return err
}

// refuse marks the pod failed with the reason (patched, with a Warning Event, when it changes) and
// does not retry: the pod's own configuration must change first.
func (c *Controller) refuse(ctx context.Context, pod *corev1.Pod, st *podState, fp, event, metric, msg string) error {
	st.failedFP = fp
	st.released, st.verified, st.settled = nil, verification{}, settled{}
	patched, err := c.ensure(ctx, pod, ours(pod), failed(msg))
	if err != nil {
		return err
	}
	if patched {
		c.metrics.Errors.WithLabelValues(metric).Inc()
		c.metrics.PodsConfigured.WithLabelValues(resultFailed).Inc()
		klog.FromContext(ctx).Info("Refused", "reason", event, "message", msg)
		c.recorder.Event(pod, corev1.EventTypeWarning, event, truncate(msg))
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

// find returns the pod's namespace. When the wait container runs again for a released pod, a new
// sandbox may exist that the finder's cache does not know: the cache entry is dropped first.
func (c *Controller) find(ctx context.Context, pod *corev1.Pod, st *podState, cur annotations) (Namespace, error) {
	if id := waitRunning(pod, c.waitContainer); id != st.waitContainerID {
		if id != "" && cur.status() == contract.StatusReady {
			klog.FromContext(ctx).V(2).Info("Wait container running again: looking for a new network namespace", "container", id)
			c.finder.Forget(string(pod.UID))
		}
		st.waitContainerID = id
	}
	start := c.now()
	ns, err := c.finder.Find(ctx, string(pod.UID), podconfig.PodIPs(pod))
	c.metrics.DiscoveryDuration.Observe(c.now().Sub(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("find the pod's network namespace: %w", err)
	}
	return ns, nil
}

func (c *Controller) apply(ctx context.Context, pod *corev1.Pod, ns Namespace, cfg *rules.Config) (netsetup.Result, error) {
	start := c.now()
	res, err := c.applier.Apply(ctx, ns, string(pod.UID), cfg)
	c.metrics.ApplyDuration.Observe(c.now().Sub(start).Seconds())
	return res, err
}

func (c *Controller) verify(ctx context.Context, pod *corev1.Pod, ns Namespace, cfg *rules.Config) error {
	start := c.now()
	_, err := c.applier.Verify(ctx, ns, string(pod.UID), cfg)
	c.metrics.VerifyDuration.Observe(c.now().Sub(start).Seconds())
	return err
}

func families(cfg *rules.Config) string {
	if cfg.EnableIPv6 {
		return contract.FamiliesDual
	}
	return contract.FamiliesIPv4
}

func findReason(err error) string {
	switch {
	case errors.Is(err, netns.ErrNotFound):
		return reasonNotFound
	case errors.Is(err, netns.ErrAmbiguous):
		return reasonAmbiguous
	case errors.Is(err, netns.ErrHostNamespace):
		return reasonHostNamespace
	}
	return reasonDiscovery
}

func applyReason(err error) string {
	if errors.Is(err, netsetup.ErrLocked) {
		return reasonLocked
	}
	return reasonApply
}

package controller

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// reconcileReleased handles a pod annotated ready: its namespace, proven to be its own and claimed
// by no other pod, is the one it was released into -> check (and repair) the released rules; a
// different one -> the sandbox was re-created: program it. A status IP change alone proves
// nothing: only the finder's proof of a new namespace does. When no namespace is proven, nothing
// is touched and the annotations stay (the wait container of a new sandbox refuses them anyway).
func (r *podRun) reconcileReleased() error {
	ns, id, err := r.open()
	if err != nil {
		r.c.metrics.Errors.WithLabelValues(reasonOf(err)).Inc()
		r.warnOnce(EventCheckFailed, truncate("released pod: "+err.Error()))
		return fmt.Errorf("released pod: %w", err)
	}
	defer ns.Close()
	if id.String() == r.cur[contract.KeyNetns] {
		r.c.claims.claim(id.String(), Key{Namespace: r.pod.Namespace, Name: r.pod.Name}, r.pod.UID)
		return r.checkReleased(ns, id)
	}
	r.logger().Info("Sandbox re-created: programming the new network namespace, proven to be the pod's",
		"oldNetns", r.cur[contract.KeyNetns], "netns", id.String(), "path", ns.Path())
	r.c.recorder.Eventf(r.pod, corev1.EventTypeNormal, EventSandboxRecreated,
		"Network namespace changed from %s to %s (%s): programming the new one", r.cur[contract.KeyNetns], id, ns.Path())
	r.st.released, r.st.verified, r.st.settled = nil, verification{}, settled{}
	switch {
	case r.sp.refused != nil:
		return r.refuse(r.sp.event, r.sp.metric, r.sp.refused.Error())
	case r.sp.transient != nil:
		return r.retry(reasonConfig, r.sp.transient)
	}
	return r.program(ns, id)
}

// checkReleased verifies a released pod's live rules against the rule set it was released with.
func (r *podRun) checkReleased(ns Namespace, id contract.NetnsID) error {
	c, st, sp := r.c, r.st, r.sp
	rel := st.released
	if rel == nil || rel.netns != id.String() || rel.hash != r.cur[contract.KeyRules] {
		if sp.cfg == nil || sp.hash != r.cur[contract.KeyRules] {
			return r.releasedUnknown(ns, id)
		}
		// Not released by this process (it restarted): the current configuration hashes to the
		// released rules, so it is the released rule set.
		rel = &release{cfg: sp.cfg, hash: sp.hash, netns: id.String()}
		st.released = rel
	}
	if sp.hash != rel.hash {
		r.specChanged(rel.hash)
	}
	done := verification{netns: id.String(), hash: rel.hash, gen: c.driftGen.Load()}
	if st.verified == done {
		st.settle(done.gen, r.fp, r.cur)
		return nil
	}
	err := r.verify(ns, rel.cfg)
	switch {
	case err == nil:
		st.verified = done
		st.settle(done.gen, r.fp, r.cur)
		return nil
	case !errors.Is(err, netsetup.ErrDrift):
		c.metrics.Errors.WithLabelValues(reasonVerify).Inc()
		return fmt.Errorf("verify the released rules: %w", err)
	}
	r.logger().Info("Rules drifted: restoring the released rule set", "netns", id.String(), "rules", rel.hash, "drift", err.Error())
	if cerr := r.clearRecord(ns); cerr != nil { // the rules are known not to be the released ones
		return cerr
	}
	res, aerr := r.apply(ns, rel.cfg)
	if aerr != nil {
		c.metrics.Errors.WithLabelValues(applyReason(aerr)).Inc()
		return fmt.Errorf("restore the released rules: %w", aerr)
	}
	c.metrics.DriftRepairs.Inc()
	drift, _, _ := strings.Cut(err.Error(), "\n") // the full difference is in the log
	c.recorder.Event(r.pod, corev1.EventTypeWarning, EventDriftRepaired, truncate(fmt.Sprintf(
		"Rules in network namespace %s had drifted: restored the released rule set %s (%s)", id, rel.hash, drift)))
	return r.release(id, rel.cfg, res, done.gen)
}

// releasedUnknown handles a released pod whose released rule set this process does not know: it
// restarted, and the configuration changed since release (or is now refused). Rules are fixed at
// release, so live rules are left alone; only when they vanished entirely are the current
// configuration's rules applied (and the annotations updated).
func (r *podRun) releasedUnknown(ns Namespace, id contract.NetnsID) error {
	c, st, sp := r.c, r.st, r.sp
	r.specChanged(r.cur[contract.KeyRules])
	done := verification{netns: id.String(), hash: r.cur[contract.KeyRules], gen: c.driftGen.Load()}
	if st.verified == done {
		st.settle(done.gen, r.fp, r.cur)
		return nil
	}
	if sp.cfg != nil {
		err := r.verify(ns, sp.cfg)
		if err == nil {
			// The live rules are the current configuration's: only the annotations lag behind.
			return r.release(id, sp.cfg, netsetup.Result{Hash: sp.hash, Families: families(sp.cfg)}, done.gen)
		}
		if !errors.Is(err, netsetup.ErrDrift) {
			c.metrics.Errors.WithLabelValues(reasonVerify).Inc()
			return fmt.Errorf("verify the live rules: %w", err)
		}
	}
	programmed, err := r.applier().Programmed(r.ctx, ns, r.key())
	if err != nil {
		c.metrics.Errors.WithLabelValues(reasonVerify).Inc()
		return fmt.Errorf("read the live rules: %w", err)
	}
	if programmed {
		r.logger().V(2).Info("Released rule set unknown since the configuration changed after release: leaving the live rules alone",
			"netns", id.String(), "released", r.cur[contract.KeyRules], "now", sp.describe())
		st.verified = done
		st.settle(done.gen, r.fp, r.cur)
		return nil
	}
	if sp.cfg == nil {
		return r.refuse(sp.event, sp.metric, fmt.Sprintf(
			"the rules vanished from network namespace %s and the pod's current configuration is %s", id, sp.describe()))
	}
	if err := r.clearRecord(ns); err != nil { // the rules vanished
		return err
	}
	res, err := r.apply(ns, sp.cfg)
	if err != nil {
		c.metrics.Errors.WithLabelValues(applyReason(err)).Inc()
		return fmt.Errorf("apply the current rules: %w", err)
	}
	c.metrics.DriftRepairs.Inc()
	c.recorder.Eventf(r.pod, corev1.EventTypeWarning, EventDriftRepaired,
		"Rules had vanished from network namespace %s; the released rule set %s is unknown since the configuration changed: applied the current configuration's rules %s",
		id, r.cur[contract.KeyRules], res.Hash)
	return r.release(id, sp.cfg, res, done.gen)
}

// specChanged reports, once per new configuration, that a released pod's configuration changed.
func (r *podRun) specChanged(released string) {
	now := r.sp.describe()
	if r.st.specChanged == now {
		return
	}
	r.st.specChanged = now
	r.c.metrics.SpecChanges.Inc()
	r.logger().Info("Traffic configuration changed after release: not applied", "released", released, "now", now)
	r.c.recorder.Event(r.pod, corev1.EventTypeWarning, EventSpecChanged, truncate(fmt.Sprintf(
		"The pod's traffic configuration changed after its rules were released (released rules %s, now %s); "+
			"rules are fixed at release: restart the pod to apply the change", released, now)))
}

package initwait

import (
	"context"
	"errors"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/record"
)

// RecordSource is the release record of this container's network namespace: the controller's
// statement, stored as lo's alias, that it verified the rules here (package record). The wait
// container reads and watches it without privileges, beside the annotations file.
type RecordSource interface {
	// Read returns the alias of lo ("" when it has none).
	Read() (string, error)
	// Watch calls notify whenever the record may have changed, until ctx ends. It returns an
	// error when it cannot watch at all; the caller then relies on the annotations file.
	Watch(ctx context.Context, notify func()) error
}

// NetlinkRecord is the real RecordSource: RTM_GETLINK and RTNLGRP_LINK in this process's network
// namespace.
type NetlinkRecord struct{}

var _ RecordSource = NetlinkRecord{}

// Read returns lo's alias.
func (NetlinkRecord) Read() (string, error) { return record.ReadAlias() }

// Watch subscribes to link notifications and calls notify on each that concerns lo.
func (NetlinkRecord) Watch(ctx context.Context, notify func()) error {
	w, err := record.NewWatcher()
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		w.Close()
	}()
	go func() {
		for w.Next() == nil {
			notify()
		}
	}()
	return nil
}

// evaluateRecord decides what the alias of lo means for this namespace, with the same checks as
// the annotations (judge). interception is the pod's own interceptionMode annotation from the
// annotations file. Anything that is not a record of the version this binary knows leaves the
// state waiting: it is ignored, never trusted, and the annotations file decides.
func (w *waiter) evaluateRecord(alias string, readErr error, interception string) state {
	if readErr != nil {
		return state{msg: "waiting: cannot read the release record: " + readErr.Error()}
	}
	rec, err := record.Parse(alias)
	switch {
	case errors.Is(err, record.ErrNoRecord) && alias == "":
		return state{msg: "waiting: no release record in this network namespace"}
	case err != nil:
		return state{msg: "waiting: release record ignored: " + err.Error()}
	}
	s := judge(report{what: "release record", statusKey: "status", netnsKey: "netns", familiesKey: "families",
		status: string(rec.Status), netns: rec.Netns.String(), families: rec.Families, rules: rec.Rules,
		hasStatus: true, hasNetns: true, hasFamilies: true, interception: interception}, w.self)
	if s.phase == phaseReady {
		s.msg = "the release record reports ready for this network namespace"
	}
	return s
}

// recordState evaluates the record read, logging each change of what it says (but not its
// initial absence).
func (w *waiter) recordState(alias string, err error, interception string) state {
	s := w.evaluateRecord(alias, err, interception)
	if s != w.recState {
		first := w.recState == (state{})
		w.recState = s
		switch {
		case s.phase == phaseReady:
			// logged as the state
		case s.phase == phaseStale || s.msg != "waiting: no release record in this network namespace":
			w.log.Warn(s.msg)
		case !first:
			w.log.Info(s.msg)
		}
	}
	return s
}

// watchRecord starts watching the record; nil when the record is off or cannot be watched.
func (w *waiter) watchRecord(ctx context.Context) <-chan struct{} {
	if w.cfg.Record == nil {
		return nil
	}
	ch := make(chan struct{}, 1)
	err := w.cfg.Record.Watch(ctx, func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	})
	if err != nil {
		w.log.Warn("cannot watch the release record: relying on the annotations file", "err", err)
		w.cfg.Record = nil
		return nil
	}
	return ch
}

// podInterception returns the pod's own interceptionMode annotation from the annotations file, ""
// when the file is not readable or complete.
func podInterception(data []byte, readErr error) string {
	if readErr != nil {
		return ""
	}
	ann, err := ParseAnnotations(data)
	if err != nil {
		return ""
	}
	return ann[istioapi.AnnotationInterceptionMode]
}

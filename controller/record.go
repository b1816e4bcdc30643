package controller

import (
	"errors"
	"fmt"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/record"
)

// The release record: beside the annotations (the durable record, the fallback and the carrier
// of failed reasons), the controller writes into the pod's own namespace that it verified the
// rules there (package record, lo's alias). The wait container reads it without the API server
// and without waiting for the kubelet's refresh of the downward-API file. It is written right
// after the rules were applied and read back (or verified), before the annotation patch, so that
// a pod is released even when the API server is unreachable (and overwritten by each later
// release); cleared before the rules of a released pod are repaired (they are known wrong), after
// an apply failed, and when the pod is refused. It is not cleared before a first apply: a retried
// release (the patch failed) re-applies the same rules, and a record that flickered off and on
// would only delay a wait container that is reading it.

// RecordWriter stores the release record in a pod's namespace.
type RecordWriter interface {
	// Write stores rec in ns.
	Write(ns Namespace, rec record.Record) error
	// Clear removes the record from ns.
	Clear(ns Namespace) error
}

// RecordReader reads the release record of a pod's namespace, for inspect.
type RecordReader interface {
	// Read returns the alias of lo in ns ("" when it has none), unparsed.
	Read(ns Namespace) (string, error)
}

// NetlinkRecords writes and reads the record through rtnetlink inside the namespace.
type NetlinkRecords struct{}

var (
	_ RecordWriter = NetlinkRecords{}
	_ RecordReader = NetlinkRecords{}
)

// Read returns lo's alias in ns.
func (NetlinkRecords) Read(ns Namespace) (string, error) {
	var alias string
	if err := ns.Do(func() (err error) { alias, err = record.ReadAlias(); return err }); err != nil {
		return "", fmt.Errorf("network namespace %s: %w", ns.Path(), err)
	}
	return alias, nil
}

// Write sets lo's alias in ns to rec.
func (NetlinkRecords) Write(ns Namespace, rec record.Record) error {
	if err := ns.Do(func() error { return record.Write(rec) }); err != nil {
		return fmt.Errorf("network namespace %s: %w", ns.Path(), err)
	}
	return nil
}

// Clear removes lo's alias in ns.
func (NetlinkRecords) Clear(ns Namespace) error {
	if err := ns.Do(record.Clear); err != nil {
		return fmt.Errorf("network namespace %s: %w", ns.Path(), err)
	}
	return nil
}

// writeRecord states in the pod's namespace that its rules res were verified there. A failure is
// logged and counted: the annotation still releases the pod.
func (r *podRun) writeRecord(id contract.NetnsID, res netsetup.Result) {
	if r.c.records == nil || r.ns == nil {
		return
	}
	if err := r.c.records.Write(r.ns, record.Ready(id, res.Hash, res.Families)); err != nil {
		r.c.metrics.Errors.WithLabelValues(reasonRecord).Inc()
		r.logger().Error(err, "Cannot write the release record: the pod is released through its annotations only", "netns", id.String())
	}
}

// dropRecord removes the record after an apply failed; a failure to do so is logged and counted.
func (r *podRun) dropRecord(ns Namespace) {
	if err := r.clearRecord(ns); err != nil {
		r.logger().Error(err, "Cannot clear the release record after a failed apply")
	}
}

// clearRecord removes the record from ns: the rules there are known not to be verified. A failure
// stops what follows (retried).
func (r *podRun) clearRecord(ns Namespace) error {
	if r.c.records == nil {
		return nil
	}
	if err := r.c.records.Clear(ns); err != nil {
		r.c.metrics.Errors.WithLabelValues(reasonRecord).Inc()
		return fmt.Errorf("clear the release record: %w", err)
	}
	return nil
}

// reasonRecord is the errors_total reason of a failed record write or clear.
const reasonRecord = "release_record"

// recordWriter is the release record writer of --release-record (nil when off).
func (c *Config) recordWriter() RecordWriter {
	if !c.ReleaseRecord {
		return nil
	}
	return NetlinkRecords{}
}

// describeRecord is the inspection's release record and what the wait container makes of it.
func (in *Inspection) describeRecord() string {
	if in.RecordErr != nil {
		return "cannot read it: " + in.RecordErr.Error()
	}
	rec, err := record.Parse(in.Record)
	switch {
	case errors.Is(err, record.ErrNoRecord) && in.Record == "":
		return "none (lo has no alias): the wait container is released by the annotations only"
	case err != nil:
		return fmt.Sprintf("%q: ignored by the wait container (%v)", in.Record, err)
	case rec.Netns.String() != in.NetnsID:
		return fmt.Sprintf("%s: written for network namespace %s, not this one (%s): ignored by the wait container", rec, rec.Netns, in.NetnsID)
	case rec.Rules != in.Annotations[contract.KeyRules]:
		return fmt.Sprintf("%s: ready for this namespace (the rules annotation says %q: not patched yet, or the API server was unreachable)", rec, in.Annotations[contract.KeyRules])
	}
	return fmt.Sprintf("%s: ready for this namespace, as the annotations", rec)
}

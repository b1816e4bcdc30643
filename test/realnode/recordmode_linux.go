package realnode

import (
	"errors"
	"fmt"
	"os"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/record"
)

// RecordEnv switches the release record off for every chart installed on the node
// (IPNC_RELEASE_RECORD=off: chart value releaseRecord=false, so --release-record=false on the
// controller and on every wait container); anything else leaves the chart's default (on).
const RecordEnv = "IPNC_RELEASE_RECORD"

// RecordOn reports whether the node's charts are installed with the release record (RecordEnv).
func RecordOn() bool { return os.Getenv(RecordEnv) != "off" }

// recordOverrides is the chart value of RecordEnv's setting (none for the default).
func recordOverrides() []string {
	if RecordOn() {
		return nil
	}
	return []string{"releaseRecord=false"}
}

// CheckRecord checks the release record in the pod's network namespace at path against the
// record setting of the node's charts: with the record on, it is ready for netnsID (the pod's
// netns annotation); with it off, there is none.
func CheckRecord(path, netnsID string) error {
	rec, err := readRecordAt(path)
	switch {
	case !RecordOn() && errors.Is(err, record.ErrNoRecord):
		return nil
	case !RecordOn() && err == nil:
		return fmt.Errorf("release record %q in %s, want none (%s=off)", rec, path, RecordEnv)
	case err != nil:
		return fmt.Errorf("release record in %s: %w", path, err)
	case rec.Status != contract.StatusReady || rec.Netns.String() != netnsID:
		return fmt.Errorf("release record %q in %s, want ready for %s", rec, path, netnsID)
	}
	return nil
}

// readRecordAt reads the release record in the network namespace at path.
func readRecordAt(path string) (record.Record, error) {
	h, err := netns.Open(path)
	if err != nil {
		return record.Record{}, err
	}
	defer h.Close()
	var rec record.Record
	err = h.Do(func() (err error) { rec, err = record.Read(); return err })
	return rec, err
}

package netns

import "net/netip"

// CNIRecord is what one libcni result cache record says about a sandbox (see StrategyCNICache).
// It is a hint for whoever reads it outside a Find (the controller's local watch of the cache):
// only Find's proof makes a namespace the pod's.
type CNIRecord struct {
	File      string
	SandboxID string
	NetNS     string // the namespace path the runtime gave the CNI (a host path)
	IfName    string
	PodUID    string // K8S_POD_UID, normalized
	IPs       []netip.Addr
}

// ReadCNIRecord reads and parses one record file with the checks of the cni-cache strategy: a
// regular file (never followed through a symlink) owned by root and not writable by group or
// others, at most MaxCNIRecordBytes, strictly parsed.
func ReadCNIRecord(path string) (CNIRecord, error) {
	data, _, err := readRecordFile(path)
	if err != nil {
		return CNIRecord{}, err
	}
	r, err := parseCNIRecord(path, data)
	if err != nil {
		return CNIRecord{}, err
	}
	return CNIRecord{File: r.File, SandboxID: r.ContainerID, NetNS: r.NetNS, IfName: r.IfName, PodUID: r.PodUID, IPs: r.IPs}, nil
}

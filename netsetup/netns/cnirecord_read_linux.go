package netns

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

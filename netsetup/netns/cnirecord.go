package netns

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

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

// Limits on the CNI result cache (StrategyCNICache), well above what a node holds: a record is a
// few KiB (the network config and the pod's annotations as capability arguments included), and a
// node has at most a few hundred pods with a few networks each.
const (
	// MaxCNIRecordBytes bounds one record file; a larger one is ignored with a counted reason.
	MaxCNIRecordBytes = 1 << 20
	// MaxCNIRecordFiles bounds the record files read per Find; the rest are counted as skipped.
	MaxCNIRecordFiles = 4096
)

// cniCacheKind is libcni's "kind" of a result cache record.
const cniCacheKind = "cniCacheV1"

// cniRecord is what one libcni result cache record says about a sandbox, parsed strictly.
type cniRecord struct {
	File         string // where it was read
	ContainerID  string // the sandbox ID
	NetNS        string // the namespace path the runtime gave the CNI (a host path)
	IfName       string
	Network      string
	PodUID       string // K8S_POD_UID, normalized
	PodNamespace string
	PodName      string
	IPs          []netip.Addr // from the result, if it lists any
}

// The JSON shape libcni writes (unknown fields, such as the config and capability arguments, are
// ignored; they are not used).
type cniRecordJSON struct {
	Kind        string       `json:"kind"`
	ContainerID string       `json:"containerId"`
	IfName      string       `json:"ifName"`
	NetworkName string       `json:"networkName"`
	NetNS       string       `json:"netns"`
	CNIArgs     [][2]string  `json:"cniArgs"`
	Result      *cniResultIP `json:"result"`
}

type cniResultIP struct {
	IPs []struct {
		Address string `json:"address"`
	} `json:"ips"`
}

// errMalformed marks a record that does not parse or lacks what proof needs.
var errMalformed = errors.New("malformed CNI result record")

// parseCNIRecord parses one record. Everything proof relies on must be present and well formed:
// the kind, the sandbox ID, the interface, an absolute clean netns path, exactly one valid
// K8S_POD_UID, and an infra container ID (if given) equal to the sandbox ID.
func parseCNIRecord(file string, data []byte) (cniRecord, error) {
	bad := func(format string, args ...any) (cniRecord, error) {
		return cniRecord{}, fmt.Errorf("%w %s: %s", errMalformed, file, fmt.Sprintf(format, args...))
	}
	var j cniRecordJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&j); err != nil {
		return bad("%v", err)
	}
	if dec.More() {
		return bad("data after the JSON object")
	}
	if j.Kind != cniCacheKind {
		return bad("kind %q, want %q", j.Kind, cniCacheKind)
	}
	if !validSandboxID(j.ContainerID) {
		return bad("containerId %q: want 1 to 128 letters, digits, '-', '_' or '.'", j.ContainerID)
	}
	if j.IfName == "" || len(j.IfName) > 15 || strings.ContainsAny(j.IfName, "/ \t\n") {
		return bad("ifName %q: not an interface name", j.IfName)
	}
	if j.NetNS == "" || len(j.NetNS) > 4096 || !filepath.IsAbs(j.NetNS) || filepath.Clean(j.NetNS) != j.NetNS {
		return bad("netns %q: want an absolute clean path", j.NetNS)
	}
	r := cniRecord{File: file, ContainerID: j.ContainerID, NetNS: j.NetNS, IfName: j.IfName, Network: j.NetworkName}
	seen := map[string]bool{}
	infra := ""
	for _, kv := range j.CNIArgs {
		k, v := kv[0], kv[1]
		if strings.HasPrefix(k, "K8S_") {
			if seen[k] {
				return bad("cniArgs: %s given twice", k)
			}
			seen[k] = true
		}
		switch k {
		case "K8S_POD_UID":
			if err := validUID(v); err != nil {
				return bad("cniArgs K8S_POD_UID: %v", err)
			}
			r.PodUID = normalizeUID(v)
		case "K8S_POD_NAMESPACE":
			r.PodNamespace = v
		case "K8S_POD_NAME":
			r.PodName = v
		case "K8S_POD_INFRA_CONTAINER_ID":
			infra = v
		}
	}
	if r.PodUID == "" {
		return bad("cniArgs: no K8S_POD_UID")
	}
	if infra != "" && infra != r.ContainerID {
		return bad("cniArgs K8S_POD_INFRA_CONTAINER_ID %q differs from containerId %q", infra, r.ContainerID)
	}
	if j.Result != nil {
		for i, ip := range j.Result.IPs {
			p, err := netip.ParsePrefix(ip.Address)
			if err != nil {
				return bad("result ips[%d].address %q: %v", i, ip.Address, err)
			}
			r.IPs = append(r.IPs, p.Addr().Unmap())
		}
	}
	return r, nil
}

func validSandboxID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// recordNetnsPaths maps a record's netns path (a host path) to the paths to open in the Finder's
// view: /proc/<pid>/ns/net in procDir, or <name> in each netns directory that is the record's
// directory or ends with it (a host directory mounted under a prefix); /var/run and /run are the
// same directory. Nil: the path is neither.
func recordNetnsPaths(netns, procDir string, netnsDirs []string) []string {
	if rest, ok := strings.CutPrefix(netns, "/proc/"); ok {
		pid, tail, ok := strings.Cut(rest, "/")
		if n, err := strconv.Atoi(pid); ok && err == nil && n > 0 && tail == "ns/net" && strconv.Itoa(n) == pid {
			return []string{procDir + "/" + pid + "/ns/net"}
		}
		return nil
	}
	dir, name := filepath.Split(netns)
	dir = filepath.Clean(dir)
	if name == "" || name == "." || name == ".." || dir == "/" {
		return nil
	}
	alias := ""
	if s, ok := strings.CutPrefix(dir, "/var/run/"); ok {
		alias = "/run/" + s
	} else if s, ok := strings.CutPrefix(dir, "/run/"); ok {
		alias = "/var/run/" + s
	}
	var out []string
	for _, d := range netnsDirs {
		if mountedAt(d, dir) || alias != "" && mountedAt(d, alias) {
			out = append(out, d+"/"+name)
		}
	}
	return out
}

// mountedAt reports whether directory d (the Finder's view) is the host directory dir, or dir
// mounted under a prefix ("/host/var/run/netns" for "/var/run/netns"). A prefix is allowed for a
// dir of two components or more only, so that "/netns" does not match every "…/netns".
func mountedAt(d, dir string) bool {
	if d == dir {
		return true
	}
	// dir starts with "/": a suffix match ends on a path component.
	return strings.Count(dir, "/") >= 2 && strings.HasSuffix(d, dir)
}

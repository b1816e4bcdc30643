package netns

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// A record as containerd 2.4 wrote it on the real node (abridged config; see docs/design.md).
const realRecord = `{"kind":"cniCacheV1","containerId":"9f3c1a0b7d2e4c5f8a6b1d0e3f2a4c5b6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a",` +
	`"config":"eyJjbmlWZXJzaW9uIjoiMS4wLjAifQ==","ifName":"eth0","networkName":"bridge",` +
	`"netns":"/var/run/netns/cni-84717c52-1b2c-3d4e-5f60-718293a4b5c6",` +
	`"cniArgs":[["K8S_POD_NAMESPACE","app"],["K8S_POD_NAME","web"],` +
	`["K8S_POD_INFRA_CONTAINER_ID","9f3c1a0b7d2e4c5f8a6b1d0e3f2a4c5b6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a"],` +
	`["K8S_POD_UID","` + testUID + `"]],` +
	`"capabilityArgs":{"cgroupPath":"/kubepods/besteffort/pod` + testUID + `","io.kubernetes.cri.pod-annotations":{}},` +
	`"result":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"interface":0,"address":"10.244.0.7/24","gateway":"10.244.0.1"}]}}`

func TestParseCNIRecord(t *testing.T) {
	r, err := parseCNIRecord("f", []byte(realRecord))
	if err != nil {
		t.Fatal(err)
	}
	if r.PodUID != testUID || r.PodName != "web" || r.PodNamespace != "app" || r.IfName != "eth0" || r.Network != "bridge" ||
		!strings.HasPrefix(r.ContainerID, "9f3c") || r.NetNS != "/var/run/netns/cni-84717c52-1b2c-3d4e-5f60-718293a4b5c6" ||
		!slices.Equal(r.IPs, []netip.Addr{netip.MustParseAddr("10.244.0.7")}) {
		t.Errorf("parsed %+v", r)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal([]byte(realRecord), &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	args := func(kv ...string) func(m map[string]any) {
		return func(m map[string]any) {
			var a [][2]string
			for i := 0; i < len(kv); i += 2 {
				a = append(a, [2]string{kv[i], kv[i+1]})
			}
			m["cniArgs"] = a
		}
	}
	bad := map[string]struct {
		data []byte
		want string
	}{
		"truncated":          {[]byte(realRecord[:len(realRecord)-1]), "unexpected EOF"},
		"two objects":        {[]byte(realRecord + realRecord), "data after the JSON object"},
		"old format":         {[]byte(`{"cniVersion":"0.4.0","ips":[]}`), `kind "", want "cniCacheV1"`},
		"no sandbox":         {edit(func(m map[string]any) { delete(m, "containerId") }), `containerId ""`},
		"sandbox with slash": {edit(func(m map[string]any) { m["containerId"] = "../x" }), `containerId "../x"`},
		"no netns":           {edit(func(m map[string]any) { delete(m, "netns") }), `netns "": want an absolute clean path`},
		"relative netns":     {edit(func(m map[string]any) { m["netns"] = "run/netns/x" }), "want an absolute clean path"},
		"unclean netns":      {edit(func(m map[string]any) { m["netns"] = "/run/netns/../x" }), "want an absolute clean path"},
		"no ifName":          {edit(func(m map[string]any) { delete(m, "ifName") }), `ifName ""`},
		"no UID":             {edit(args("K8S_POD_NAME", "web")), "no K8S_POD_UID"},
		"bad UID":            {edit(args("K8S_POD_UID", "pod/../x")), "cniArgs K8S_POD_UID"},
		"two UIDs":           {edit(args("K8S_POD_UID", testUID, "K8S_POD_UID", testUID)), "K8S_POD_UID given twice"},
		"other infra":        {edit(args("K8S_POD_UID", testUID, "K8S_POD_INFRA_CONTAINER_ID", "abc")), `K8S_POD_INFRA_CONTAINER_ID "abc" differs`},
		"bad result IP": {edit(func(m map[string]any) {
			m["result"] = map[string]any{"ips": []any{map[string]any{"address": "10.0.0.300/24"}}}
		}), "result ips[0].address"},
		"args not pairs": {edit(func(m map[string]any) { m["cniArgs"] = []any{[]string{"K8S_POD_UID"}} }), "malformed"},
	}
	for name, b := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := parseCNIRecord("/r/f", b.data)
			if err == nil || !strings.Contains(err.Error(), b.want) || !strings.Contains(err.Error(), "malformed CNI result record /r/f") {
				t.Errorf("error = %v, want it to contain %q", err, b.want)
			}
		})
	}
	// Without a result (a record of a failed ADD never exists; CHECK-only records may lack it).
	if r, err := parseCNIRecord("f", edit(func(m map[string]any) { delete(m, "result") })); err != nil || r.IPs != nil {
		t.Errorf("record without result: %+v, %v", r, err)
	}
}

func TestRecordNetnsPaths(t *testing.T) {
	dirs := []string{"/host/var/run/netns", "/host/run/netns", "/tmp/x", "/host/netns"}
	for _, c := range []struct {
		netns string
		want  []string
	}{
		{"/var/run/netns/cni-1", []string{"/host/var/run/netns/cni-1", "/host/run/netns/cni-1"}},
		{"/run/netns/cni-1", []string{"/host/var/run/netns/cni-1", "/host/run/netns/cni-1"}},
		{"/tmp/x/a", []string{"/tmp/x/a"}},
		{"/proc/42/ns/net", []string{"/host/proc/42/ns/net"}},
		{"/proc/042/ns/net", nil},
		{"/proc/42/ns/mnt", nil},
		{"/proc/self/ns/net", nil},
		{"/elsewhere/netns/a", nil},
		{"/netns", nil},
		{"/netns/a", nil},
		{"/host/netns/a", []string{"/host/netns/a"}},
		{"/x/run/netns/a", nil},
	} {
		if got := recordNetnsPaths(c.netns, "/host/proc", dirs); !slices.Equal(got, c.want) {
			t.Errorf("recordNetnsPaths(%q) = %q, want %q", c.netns, got, c.want)
		}
	}
}

func TestCgroupPodUIDs(t *testing.T) {
	a, b := testUID, "11111111-2222-3333-4444-555555555555"
	for _, c := range []struct {
		content string
		want    []string
	}{
		{"0::/init.scope\n", nil},
		{"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(a, "-", "_") + ".slice/cri-containerd-1.scope\n", []string{a}},
		{"3:pids:/kubepods/besteffort/pod" + a + "/c1\n2:cpu:/kubepods/besteffort/pod" + a + "/c1\n", []string{a}},
		{"3:pids:/kubepods/pod" + a + "/c1\n0::/kubepods/pod" + b + "/c2\n", []string{a, b}},
		{"0::/../../pod" + strings.ToUpper(b) + "/x\n", []string{b}},
		{"0::/kubepods/podnot-a-uid!/x\n", nil},
	} {
		if got := cgroupPodUIDs(c.content); !slices.Equal(got, c.want) {
			t.Errorf("cgroupPodUIDs(%q) = %v, want %v", c.content, got, c.want)
		}
	}
}

// FuzzParseCNIRecord: no input panics, and an accepted record carries what proof relies on.
func FuzzParseCNIRecord(f *testing.F) {
	f.Add([]byte(realRecord))
	f.Add([]byte(`{"kind":"cniCacheV1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseCNIRecord("f", data)
		if err != nil {
			return
		}
		if validUID(r.PodUID) != nil || r.PodUID != normalizeUID(r.PodUID) || !validSandboxID(r.ContainerID) ||
			!strings.HasPrefix(r.NetNS, "/") || r.IfName == "" {
			t.Fatalf("accepted %q as %+v", data, r)
		}
	})
}

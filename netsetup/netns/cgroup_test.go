package netns

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

const (
	testUID  = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	otherUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f1"
	slashUID = "0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0"
)

func TestCgroupHasPod(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    bool
	}{
		{"v1 cgroupfs besteffort", "8:pids:/kubepods/besteffort/pod" + testUID + "/4f3c2b1a\n1:cpu:/\n", true},
		{"v1 cgroupfs burstable", "4:memory:/kubepods/burstable/pod" + testUID + "/ctr\n", true},
		{"v1 cgroupfs guaranteed", "4:memory:/kubepods/pod" + testUID + "/ctr\n", true},
		{"v1 cgroupfs pod cgroup itself", "4:memory:/kubepods/besteffort/pod" + testUID + "\n", true},
		{"v1 named systemd hierarchy", "1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + slashUID + ".slice/cri-containerd-abc.scope\n", true},
		{"v2 systemd besteffort", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + slashUID + ".slice/cri-containerd-abc.scope\n", true},
		{"v2 systemd guaranteed", "0::/kubepods.slice/kubepods-pod" + slashUID + ".slice/crio-abc.scope\n", true},
		{"v2 systemd kind nested", "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod" + slashUID + ".slice/cri-containerd-1.scope\n", true},
		{"v2 cgroupfs", "0::/kubepods/burstable/pod" + testUID + "/ctr\n", true},
		{"v2 cgroupfs under docker", "0::/docker/a1b2/kubepods/besteffort/pod" + testUID + "/ctr\n", true},
		{"v2 relative to cgroup namespace, systemd", "0::/../../kubepods-besteffort-pod" + slashUID + ".slice/cri-containerd-abc.scope\n", true},
		{"v2 relative to cgroup namespace, other QoS", "0::/../../../kubepods-burstable.slice/kubepods-burstable-pod" + slashUID + ".slice/cri-containerd-abc.scope\n", true},
		{"v1 and v2 relative to cgroup namespace, as the kernel shows them", "9:name=systemd:/\n8:pids:/../../../burstable/pod" + testUID + "/c2\n4:memory:/\n0::/../../../burstable/pod" + testUID + "/c2\n", true},
		{"v2 relative to cgroup namespace, cgroupfs", "0::/../../pod" + testUID + "/ctr\n", true},
		{"v2 deleted cgroup", "0::/kubepods/besteffort/pod" + testUID + " (deleted)\n", true},
		{"upper-case UID in path", "0::/kubepods/pod" + strings.ToUpper(testUID) + "/ctr\n", true},
		{"no trailing newline", "0::/kubepods/pod" + testUID + "/ctr", true},
		{"match on a later line", "12:pids:/\n11:memory:/kubepods/pod" + testUID + "/c\n0::/\n", true},
		{"other pod", "0::/kubepods/besteffort/pod" + otherUID + "/ctr\n", false},
		{"other pod, systemd", "0::/kubepods.slice/kubepods-pod" + strings.ReplaceAll(otherUID, "-", "_") + ".slice/x.scope\n", false},
		{"UID prefix only", "0::/kubepods/pod" + testUID[:30] + "/ctr\n", false},
		{"UID with extra suffix", "0::/kubepods/pod" + testUID + "0/ctr\n", false},
		{"UID in a container segment, not a pod segment", "0::/kubepods/besteffort/x" + testUID + "/ctr\n", false},
		{"UID only in the controller list", "3:pod" + testUID + ":/\n", false},
		{"slice without -pod", "0::/kubepods.slice/kubepods-" + slashUID + ".slice\n", false},
		{"root cgroup", "0::/\n", false},
		{"malformed line", "kubepods/pod" + testUID + "\n", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cgroupHasPod(tt.content, testUID); got != tt.want {
				t.Errorf("cgroupHasPod(%q, %q) = %v, want %v", tt.content, testUID, got, tt.want)
			}
		})
	}
}

func TestSegmentPodUID(t *testing.T) {
	tests := []struct {
		seg    string
		want   string
		wantOK bool
	}{
		{"pod" + testUID, testUID, true},
		{"kubepods-besteffort-pod" + slashUID + ".slice", slashUID, true},
		{"kubepods-pod" + slashUID + ".slice", slashUID, true},
		{"kubepods-pod.slice", "", false},
		{"pod", "", false},
		{"kubepods.slice", "", false},
		{"cri-containerd-abc.scope", "", false},
		{"..", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := segmentPodUID(tt.seg)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("segmentPodUID(%q) = %q, %v; want %q, %v", tt.seg, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestValidatePod(t *testing.T) {
	v4 := netip.MustParseAddr("10.1.2.3")
	mapped := netip.MustParseAddr("::ffff:10.1.2.3")
	tests := []struct {
		name    string
		uid     string
		ips     []netip.Addr
		wantErr string // substring; "" means valid
		wantIPs int
	}{
		{"UUID", testUID, []netip.Addr{v4}, "", 1},
		{"static pod hash", "6f1d0a6b1c2e3f405162738495a6b7c8", []netip.Addr{v4}, "", 1},
		{"mapped duplicate folded", testUID, []netip.Addr{v4, mapped}, "", 1},
		{"empty UID", "", []netip.Addr{v4}, `pod UID "": want 1 to 64 hex digits`, 0},
		{"path in UID", "../../etc", []netip.Addr{v4}, `pod UID "../../etc": character "."`, 0},
		{"underscore UID", slashUID, []netip.Addr{v4}, `character "_"`, 0},
		{"no IPs", testUID, nil, `pod UID "` + testUID + `": no pod IPs given`, 0},
		{"invalid IP", testUID, []netip.Addr{{}}, `pod IP #0 "invalid IP" is not a usable address`, 0},
		{"unspecified IP", testUID, []netip.Addr{netip.IPv4Unspecified()}, `pod IP #0 "0.0.0.0"`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ips, err := validatePod(tt.uid, tt.ips)
			if tt.wantErr == "" {
				if err != nil || len(ips) != tt.wantIPs {
					t.Fatalf("validatePod = %v, %v; want %d IPs", ips, err, tt.wantIPs)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("validatePod error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	o, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.ProcDir != "/proc" || len(o.NetnsDirs) != 2 || o.CNIResultsDir != "/var/lib/cni/results" ||
		!slices.Equal(o.Strategies, []Strategy{StrategyNamed, StrategyCNICache, StrategyProcUID, StrategyProcIP}) {
		t.Errorf("defaults = %+v", o)
	}
	bad := []struct {
		opts Options
		want string
	}{
		{Options{Strategies: []Strategy{}}, "discovery strategies: empty list"},
		{Options{Strategies: []Strategy{"nope"}}, `unknown strategy "nope"`},
		{Options{Strategies: []Strategy{StrategyNamed, StrategyNamed}}, `"named" listed twice`},
		{Options{Strategies: []Strategy{StrategyNamed, StrategyProcIP}}, "discovery strategies [named proc-ip]: none proves whose a namespace is (an IP is only a hint): add cni-cache or proc-uid"},
		{Options{CNIResultsDir: "var/lib/cni/results"}, `CNI results directory "var/lib/cni/results": want an absolute path`},
		{Options{ProcDir: "host/proc"}, `proc directory "host/proc": want an absolute path`},
		{Options{NetnsDirs: []string{"run/netns"}}, `netns directory "run/netns": want an absolute path`},
	}
	for _, b := range bad {
		if _, err := b.opts.withDefaults(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("withDefaults(%+v) error = %v, want %q", b.opts, err, b.want)
		}
	}
	if err := (Options{Strategies: []Strategy{StrategyCNICache}}).Validate(); err != nil {
		t.Errorf("Validate(cni-cache alone): %v", err)
	}
	got, err := ParseStrategies("proc-uid, named,cni-cache")
	if err != nil || !slices.Equal(got, []Strategy{StrategyProcUID, StrategyNamed, StrategyCNICache}) {
		t.Errorf("ParseStrategies = %v, %v", got, err)
	}
	if _, err := ParseStrategies("named,,proc-ip"); err == nil || !strings.Contains(err.Error(), `discovery strategies "named,,proc-ip": unknown strategy ""`) {
		t.Errorf("ParseStrategies with an empty item: %v", err)
	}
}

func TestAmbiguousErrorIs(t *testing.T) {
	err := error(&AmbiguousError{PodUID: testUID, Candidates: []Candidate{{Path: "/run/netns/a"}, {Path: "/run/netns/b"}}})
	if !errors.Is(err, ErrAmbiguous) || errors.Is(err, ErrNotFound) {
		t.Errorf("errors.Is on %v", err)
	}
	var ae *AmbiguousError
	if !errors.As(err, &ae) || len(ae.Candidates) != 2 {
		t.Errorf("errors.As on %v", err)
	}
}

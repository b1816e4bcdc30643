package kubelet

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testPod() *corev1.Pod {
	always := corev1.ContainerRestartPolicyAlways
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1",
			Annotations: map[string]string{"b": "x\"y", "a": "1"}, Labels: map[string]string{"app": "p"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{
				{Name: "first"},
				{Name: DefaultWaitContainerName},
				{Name: "istio-proxy", RestartPolicy: &always},
				{Name: "migrate"},
			},
			Containers: []corev1.Container{{Name: "app"}},
		},
	}
}

func TestBuildStatus(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ips := []netip.Addr{netip.MustParseAddr("10.244.0.2"), netip.MustParseAddr("fd00:244::2")}
	base := statusInput{pod: testPod(), waitName: DefaultWaitContainerName, hostIP: "127.0.0.1", startTime: t0, sandboxID: "sb"}
	running := base
	running.podIPs, running.sandboxReady = ips, t0.Add(time.Second)
	running.wait = containerRun{phase: runRunning, id: "containerd://w", started: t0.Add(2 * time.Second)}
	released := running
	released.wait.phase, released.wait.finished = runExited, t0.Add(3*time.Second)
	failed := released
	failed.wait.exitCode, failed.wait.message = 4, "bad annotation"

	states := func(cs []corev1.ContainerStatus) string {
		var out []string
		for _, c := range cs {
			switch {
			case c.State.Running != nil:
				out = append(out, c.Name+"=running")
			case c.State.Terminated != nil:
				out = append(out, c.Name+"=terminated")
			default:
				out = append(out, c.Name+"=waiting")
			}
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		name      string
		in        statusInput
		phase     corev1.PodPhase
		podIP     string
		init, ctr string
		ready     corev1.ConditionStatus
	}{
		{"no sandbox", base, corev1.PodPending, "",
			"first=waiting,istio-pod-network-wait=waiting,istio-proxy=waiting,migrate=waiting", "app=waiting", corev1.ConditionFalse},
		{"waiting", running, corev1.PodPending, "10.244.0.2",
			"first=terminated,istio-pod-network-wait=running,istio-proxy=waiting,migrate=waiting", "app=waiting", corev1.ConditionFalse},
		{"released", released, corev1.PodRunning, "10.244.0.2",
			"first=terminated,istio-pod-network-wait=terminated,istio-proxy=running,migrate=terminated", "app=running", corev1.ConditionTrue},
		{"failed", failed, corev1.PodPending, "10.244.0.2",
			"first=terminated,istio-pod-network-wait=terminated,istio-proxy=waiting,migrate=waiting", "app=waiting", corev1.ConditionFalse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := buildStatus(tc.in)
			if st.Phase != tc.phase || st.PodIP != tc.podIP {
				t.Errorf("phase %s, podIP %q; want %s, %q", st.Phase, st.PodIP, tc.phase, tc.podIP)
			}
			if got := states(st.InitContainerStatuses); got != tc.init {
				t.Errorf("init containers %s\nwant %s", got, tc.init)
			}
			if got := states(st.ContainerStatuses); got != tc.ctr {
				t.Errorf("containers %s, want %s", got, tc.ctr)
			}
			for _, c := range st.Conditions {
				if c.Type == corev1.PodReady && c.Status != tc.ready {
					t.Errorf("Ready %s, want %s", c.Status, tc.ready)
				}
			}
			// The same input gives the same bytes: no patch when nothing changed.
			a, _ := json.Marshal(st)
			b, _ := json.Marshal(buildStatus(tc.in))
			if string(a) != string(b) {
				t.Error("buildStatus is not deterministic")
			}
		})
	}
	st := buildStatus(failed)
	if term := st.InitContainerStatuses[1].State.Terminated; term.ExitCode != 4 || term.Message != "bad annotation" || term.Reason != "Error" {
		t.Errorf("failed wait container: %+v", term)
	}
	if len(st.PodIPs) != 2 || st.PodIPs[1].IP != "fd00:244::2" {
		t.Errorf("pod IPs %v", st.PodIPs)
	}
	never := failed
	never.pod = testPod()
	never.pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	if got := buildStatus(never).Phase; got != corev1.PodFailed {
		t.Errorf("restartPolicy Never, init container failed: phase %s, want Failed", got)
	}
}

func TestVolumeFiles(t *testing.T) {
	pod := testPod()
	vol := &corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
		{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}},
		{Path: "app", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}},
		{Path: "uid", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}},
	}}}}
	files, err := volumeFiles(pod, vol)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(files["annotations"]), "a=\"1\"\nb=\"x\\\"y\""; got != want {
		t.Errorf("annotations file %q, want %q", got, want)
	}
	if string(files["app"]) != "p" || string(files["uid"]) != "u1" {
		t.Errorf("files %q", files)
	}
	vol.DownwardAPI.Items[0].FieldRef.FieldPath = "status.podIP"
	if _, err := volumeFiles(pod, vol); err == nil || !strings.Contains(err.Error(), `"status.podIP"`) {
		t.Errorf("unsupported field path: %v", err)
	}
	if files, err := volumeFiles(pod, &corev1.Volume{Name: "e", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}); files != nil || err != nil {
		t.Errorf("emptyDir: %v %v", files, err)
	}
}

func TestIPAllocator(t *testing.T) {
	a := newIPAllocator(netip.MustParsePrefix("10.244.0.1/16"), netip.MustParsePrefix("fd00:244::1/64"))
	n, err := a.allocate()
	if err != nil {
		t.Fatal(err)
	}
	if got := a.ips(n, true); got[0].String() != "10.244.0.2" || got[1].String() != "fd00:244::2" {
		t.Errorf("first pod IPs %v", got)
	}
	for range 300 {
		if n, err = a.allocate(); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.ips(n, true); got[0].String() != "10.244.1.46" || got[1].String() != "fd00:244::12e" {
		t.Errorf("302nd pod IPs %v, want 10.244.1.46 and fd00:244::12e", got)
	}
	a.release(2)
	small := newIPAllocator(netip.MustParsePrefix("192.168.9.1/29"), netip.MustParsePrefix("fd00::1/64"))
	var got []string
	for {
		n, err := small.allocate()
		if err != nil {
			break
		}
		got = append(got, small.addr4(n).String())
	}
	if strings.Join(got, " ") != "192.168.9.2 192.168.9.3 192.168.9.4 192.168.9.5 192.168.9.6" {
		t.Errorf("a /29 hands out %v", got)
	}
}

func TestIPFamilies(t *testing.T) {
	for v, want := range map[string]bool{"": false, "IPv4": false, "IPv4,IPv6": true, "IPv4, IPv6": true} {
		pod := testPod()
		if v != "" {
			pod.Annotations[AnnotationIPFamilies] = v
		}
		if dual, err := ipFamilies(pod); err != nil || dual != want {
			t.Errorf("%q: dual %t, %v", v, dual, err)
		}
	}
	pod := testPod()
	pod.Annotations[AnnotationIPFamilies] = "IPv6"
	if _, err := ipFamilies(pod); err == nil || !strings.Contains(err.Error(), `"IPv6"`) {
		t.Errorf("IPv6 only: %v", err)
	}
}

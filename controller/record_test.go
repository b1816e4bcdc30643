package controller

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/record"
)

// fakeRecords is a RecordWriter that keeps each namespace's record, and logs its calls into the
// applier's call list, so that tests see the order of clears, applies and writes.
type fakeRecords struct {
	a   *fakeApplier
	err error // returned by every call when set
	by  map[string]string
}

var _ RecordWriter = (*fakeRecords)(nil)

func newFakeRecords(a *fakeApplier) *fakeRecords { return &fakeRecords{a: a, by: map[string]string{}} }

func (r *fakeRecords) Write(ns Namespace, rec record.Record) error {
	s, err := rec.Format() // refuses what the kernel-side Parse would
	if err != nil {
		return err
	}
	return r.set(ns, "record write", s)
}

func (r *fakeRecords) Clear(ns Namespace) error { return r.set(ns, "record clear", "") }

func (r *fakeRecords) set(ns Namespace, op, s string) error {
	r.a.mu.Lock()
	defer r.a.mu.Unlock()
	extra := ""
	if s != "" {
		extra = " " + s
	}
	id := r.a.call(op, ns, extra)
	if r.err != nil {
		return r.err
	}
	r.by[id.String()] = s
	return nil
}

// failPatches makes the API server refuse every patch while *down.
func failPatches(f *fixture, down *bool) {
	f.client.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if *down {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
}

// TestReleaseRecordWrittenBeforeThePatch: the record is written once the rules are read back,
// before the annotation patch, and stays when the patch fails (the API server is unreachable: the
// wait container is released through it); the patch is retried and sent, and the retry does not
// clear the record on the way (a wait container reading it would see it flicker).
func TestReleaseRecordWrittenBeforeThePatch(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	f := newSandboxed(t, pod)
	recs := newFakeRecords(f.applier)
	f.c.records = recs
	down := true
	failPatches(f, &down)

	err := f.sync(pod)
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("sync with the API server down: %v, want the patch error", err)
	}
	_, hash := specOf(t, pod)
	rec := record.Ready(cookie(4097), hash, "ipv4").String()
	want := []string{"foreign cookie:4097", "apply cookie:4097 " + hash, "record write cookie:4097 " + rec}
	if got := f.applier.takeCalls(); !slices.Equal(got, want) {
		t.Fatalf("calls\n got %q\nwant %q", got, want)
	}
	if got := recs.by["cookie:4097"]; got != rec {
		t.Fatalf("record %q, want %q", got, rec)
	}
	f.takePatches()

	down = false
	f.mustSync(pod)
	f.expectReady(pod, pod, "cookie:4097")
	for _, c := range f.applier.takeCalls() {
		if strings.HasPrefix(c, "record clear") {
			t.Errorf("the retry cleared the record: %s", c)
		}
	}
	if got := recs.by["cookie:4097"]; got != rec {
		t.Errorf("record after the retry %q, want %q", got, rec)
	}
}

// TestReleaseRecordClearedWhenTheApplyFails: a failed apply leaves no record.
func TestReleaseRecordClearedWhenTheApplyFails(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	f := newSandboxed(t, pod)
	recs := newFakeRecords(f.applier)
	recs.by["cookie:4097"] = "pnc1 stale"
	f.c.records = recs
	f.applier.applyErrs = []error{errors.New("iptables-restore: line 3 failed")}
	if err := f.sync(pod); err == nil {
		t.Fatal("sync succeeded with a failing apply")
	}
	if got := recs.by["cookie:4097"]; got != "" {
		t.Errorf("record after a failed apply: %q, want none", got)
	}
	for _, c := range f.applier.takeCalls() {
		if strings.HasPrefix(c, "record write") {
			t.Errorf("record written after a failed apply: %s", c)
		}
	}
}

// TestReleaseRecordOnDriftRepair: drifted rules are restored with the record cleared first and
// written again after; a record that cannot be cleared stops the repair (retried).
func TestReleaseRecordOnDriftRepair(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	f := newSandboxed(t, pod)
	recs := newFakeRecords(f.applier)
	f.c.records = recs
	f.mustSync(pod)
	f.takePatches()
	released, _ := f.deliver(f.server(pod))
	f.applier.takeCalls()
	f.applier.mu.Lock()
	f.applier.live[cookie(4097)] = "" // flushed by someone
	f.applier.mu.Unlock()
	f.c.driftGen.Add(1)
	f.mustSync(released)
	var ops []string
	for _, c := range f.applier.takeCalls() {
		ops = append(ops, strings.Fields(c)[0]+" "+strings.Fields(c)[1])
	}
	want := []string{"verify cookie:4097", "record clear", "apply cookie:4097", "record write"}
	if !slices.Equal(ops, want) {
		t.Errorf("drift repair calls %q, want %q", ops, want)
	}

	f.applier.mu.Lock()
	f.applier.live[cookie(4097)] = "" // flushed again
	f.applier.mu.Unlock()
	recs.err = errors.New("EPERM")
	f.c.driftGen.Add(1)
	if err := f.sync(released); err == nil || !strings.Contains(err.Error(), "clear the release record") {
		t.Fatalf("drift repair with an unclearable record: %v, want the clear error", err)
	}
	for _, c := range f.applier.takeCalls() {
		if strings.HasPrefix(c, "apply") {
			t.Errorf("repaired although the record could not be cleared: %s", c)
		}
	}
}

// TestLocalDiscoveryWithoutPodIP: a pod whose status has no IP yet is programmed as soon as the
// CNI result cache has its sandbox, found with the record's addresses; the re-created sandbox
// (a newer record, new IP, status unchanged) makes the finder forget the old one and the new one
// is programmed.
func TestLocalDiscoveryWithoutPodIP(t *testing.T) {
	pod := meshPod("web", "", func(p *corev1.Pod) { p.Status.PodIPs = nil })
	f := newFixture(t, pod)
	if why := f.c.skipped(pod); why != whyNoIP {
		t.Fatalf("without local discovery: skipped %q, want %q", why, whyNoIP)
	}
	f.c.local = newLocalSandboxes()
	f.finder.sandbox(string(pod.UID), 4097, "10.1.0.5")
	if why := f.c.skipped(pod); why != whyNoIP {
		t.Fatalf("no record yet: skipped %q, want %q", why, whyNoIP)
	}
	t0 := time.Unix(1e9, 0)
	f.c.local.put("e2e-sb1-eth0", netns.CNIRecord{PodUID: string(pod.UID), SandboxID: "sb1", IPs: []netip.Addr{netip.MustParseAddr("10.1.0.5")}}, t0)
	f.mustSync(pod)
	withIP := pod.DeepCopy()
	withIP.Status.PodIP, withIP.Status.PodIPs = "10.1.0.5", []corev1.PodIP{{IP: "10.1.0.5"}}
	f.expectReady(pod, withIP, "cookie:4097")

	released, _ := f.deliver(f.server(pod))
	f.finder.sandbox(string(pod.UID), 4098, "10.1.0.9")
	f.c.local.remove("e2e-sb1-eth0")
	f.c.local.put("e2e-sb2-eth0", netns.CNIRecord{PodUID: string(pod.UID), SandboxID: "sb2", IPs: []netip.Addr{netip.MustParseAddr("10.1.0.9")}}, t0.Add(time.Second))
	f.mustSync(released)
	if !slices.Contains(f.finder.forgotten, string(pod.UID)) {
		t.Errorf("the finder did not forget the old sandbox (forgotten %v)", f.finder.forgotten)
	}
	withNewIP := pod.DeepCopy()
	withNewIP.Status.PodIP, withNewIP.Status.PodIPs = "10.1.0.9", []corev1.PodIP{{IP: "10.1.0.9"}}
	f.expectReady(pod, withNewIP, "cookie:4098")
}

func TestLocalSandboxesLatest(t *testing.T) {
	l := newLocalSandboxes()
	t0 := time.Unix(1e9, 0)
	ip := netip.MustParseAddr
	l.put("n1-old-eth0", netns.CNIRecord{PodUID: "u", SandboxID: "old", IPs: []netip.Addr{ip("10.0.0.1")}}, t0)
	l.put("n1-new-eth0", netns.CNIRecord{PodUID: "u", SandboxID: "new", IPs: []netip.Addr{ip("fd00::2")}}, t0.Add(time.Second))
	l.put("n2-new-net1", netns.CNIRecord{PodUID: "u", SandboxID: "new", IPs: []netip.Addr{ip("10.0.0.2"), ip("fd00::2")}}, t0.Add(time.Second))
	l.put("n1-x-eth0", netns.CNIRecord{PodUID: "other", SandboxID: "x", IPs: []netip.Addr{ip("10.0.0.3")}}, t0.Add(time.Hour))
	sb, ips, ok := l.latest("u")
	if !ok || sb != "new" || fmt.Sprint(ips) != "[10.0.0.2 fd00::2]" {
		t.Errorf("latest = %q %v %v, want new [10.0.0.2 fd00::2]", sb, ips, ok)
	}
	if l.changed("u") {
		t.Error("first look-up reported as a change")
	}
	l.remove("n1-new-eth0")
	l.remove("n2-new-net1")
	if !l.changed("u") {
		t.Error("the older sandbox being the newest now is not reported as a change")
	}
	if _, _, ok := l.latest("nobody"); ok {
		t.Error("a pod without records has a sandbox")
	}
}

// TestReleaseRecordClearedWhenRefused: a pod refused once its namespace is open (the other
// backend's rules found there) leaves no record in it.
func TestReleaseRecordClearedWhenRefused(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	f := newSandboxed(t, pod)
	recs := newFakeRecords(f.applier)
	recs.by["cookie:4097"] = "pnc1 stale"
	f.c.records = recs
	f.applier.foreign[cookie(4097)] = true
	if err := f.sync(pod); err != nil {
		t.Fatal(err)
	}
	if got := recs.by["cookie:4097"]; got != "" {
		t.Errorf("record after the refusal: %q, want none", got)
	}
}

package e2e_test

// The release record and local discovery on the simulated node: the controller finds a new
// sandbox through the CNI result cache the simulated kubelet writes, programs it, and releases the
// wait container through the record in its namespace, also while the API server is down; the
// annotations follow once it is back. E2E_RELEASE_RECORD=off runs every test of the package with
// the record off (--release-record=false on the controller).

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/record"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/kubelet"
)

// recordOn reports whether the suite runs with the release record (E2E_RELEASE_RECORD, default on).
func recordOn() bool { return os.Getenv("E2E_RELEASE_RECORD") != "off" }

// recordArgs are the controller flags of the suite's record setting and the simulated node's CNI
// result cache.
func recordArgs(kl *kubelet.Kubelet) []string {
	return []string{"--cni-results-dir=" + kl.CNIResultsDir(), fmt.Sprintf("--release-record=%t", recordOn())}
}

// readRecord reads the release record of h (the alias of its lo).
func readRecord(h *netns.Handle) (string, error) {
	var alias string
	err := h.Do(func() (err error) { alias, err = record.ReadAlias(); return err })
	return alias, err
}

// releaseByRecord is the release evidence when the wait process exited before the annotations it
// saw named its namespace: the record in that namespace. It returns the rules hash and families
// the record states, or why the release is not explained by it.
func releaseByRecord(x kubelet.WaitExit) (rules, families, problem string) {
	alias, err := readRecord(x.Netns)
	if err != nil {
		return "", "", "the release record is unreadable: " + err.Error()
	}
	rec, err := record.Parse(alias)
	switch {
	case err != nil:
		return "", "", fmt.Sprintf("no release record to explain the release (alias %q: %v)", alias, err)
	case rec.Netns.String() != x.Sandbox.NetnsID:
		return "", "", fmt.Sprintf("the release record names namespace %s, the pod ran in %s", rec.Netns, x.Sandbox.NetnsID)
	}
	return rec.Rules, rec.Families, ""
}

// TestRecordReleasesBeforeTheAnnotation: with the record on, every pod of a burst is released and
// its namespace holds the record of its verified rules, naming it; with it off on both sides (the
// controller restarted with --release-record=false, the wait containers given it too, as the
// chart's releaseRecord=false does), none holds one and every pod is released by its annotation.
// Both settings run whatever E2E_RELEASE_RECORD says.
func TestRecordReleasesBeforeTheAnnotation(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("release-record=%t", on), func(t *testing.T) {
			e := setup(t)
			if on != recordOn() {
				e.restartWith(t, fmt.Sprintf("--release-record=%t", on))
				t.Cleanup(func() { e.restartWith(t) })
			}
			ns := e.namespace(t, fmt.Sprintf("record-%t", on), nil)
			e.createPods(t, e.meshPods(ns, names("p", 10), harness.WithWaitArgs(fmt.Sprintf("--release-record=%t", on))))
			checkRecords(t, e, e.waitPods(t, ns, nil, "released", releaseTimeout, released), on)
		})
	}
}

// checkRecords checks the released pods' namespaces: each holds the record of its annotations
// (on), or none and no pod was released by one (off).
func checkRecords(t *testing.T, e *environment, pods map[string]*corev1.Pod, on bool) {
	t.Helper()
	byRecord := 0
	for _, p := range pods {
		h, err := e.kl.OpenNetns(p.UID)
		if err != nil {
			t.Fatal(err)
		}
		alias, err := readRecord(h)
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := ""
		if on {
			want = record.Ready(mustID(t, p.Annotations[contract.KeyNetns]), p.Annotations[contract.KeyRules], p.Annotations[contract.KeyFamilies]).String()
		}
		if alias != want {
			t.Errorf("pod %s: release record %q, want %q", p.Name, alias, want)
		}
		if strings.Contains(e.kl.WaitLogs(p.UID), "release record reports ready") {
			byRecord++
		}
	}
	t.Logf("%d of %d pods released by the record (the others by the annotation)", byRecord, len(pods))
	if !on && byRecord > 0 {
		t.Errorf("%d pods released by a record with --release-record=false", byRecord)
	}
}

func mustID(t *testing.T, s string) contract.NetnsID {
	t.Helper()
	id, err := contract.ParseNetnsID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestAPIServerDownSandboxRecreated: two released pods get new sandboxes (one keeps its IP, one
// gets a new one) while the API server is stopped. The controller finds them through the CNI
// result cache, programs them from the cached spec and, with the record on, the new wait
// containers exit 0 before the API server is back; once it is, the annotations name the new
// namespaces (the patch is retried) and the pods are reported released. With the record off the
// new wait containers wait for the annotation, which follows the API server's return.
func TestAPIServerDownSandboxRecreated(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "apidown", nil)
	e.createPods(t, e.meshPods(ns, []string{"same-ip", "new-ip"}))
	pods := e.waitPods(t, ns, nil, "released", releaseTimeout, released)
	old := map[string]string{}
	if err := e.c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	apiUp := false
	defer func() {
		if !apiUp {
			if err := e.c.StartAPIServer(context.Background()); err != nil {
				t.Errorf("restart the API server: %v", err)
			}
		}
	}()
	for name, p := range pods {
		sb, _ := e.kl.Sandbox(p.UID)
		old[name] = sb.NetnsID
		if _, err := e.kl.Recreate(context.Background(), p.UID, name == "new-ip"); err != nil {
			t.Fatal(err)
		}
	}
	exitedAgain := func(p *corev1.Pod) func() bool {
		return func() bool {
			sb, _ := e.kl.Sandbox(p.UID)
			tl, _ := e.kl.Timeline(p.UID)
			return sb.NetnsID != old[p.Name] && !tl.WaitExited.IsZero() && tl.ExitCode == 0
		}
	}
	for _, p := range pods {
		h, err := e.kl.OpenNetns(p.UID)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := podconfig.FromPod(p)
		if err != nil {
			t.Fatal(err)
		}
		e.poll(t, "pod "+p.Name+"'s new namespace programmed with the API server down", func() bool {
			_, err := e.applier.Verify(context.Background(), h, string(p.UID), cfg)
			return err == nil
		})
		if recordOn() {
			e.poll(t, "pod "+p.Name+"'s new wait container released by the record with the API server down", exitedAgain(p))
		} else if exitedAgain(p)() {
			t.Errorf("pod %s released with the API server down and no record", p.Name)
		}
		h.Close()
	}
	if err := e.c.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	apiUp = true
	pods = e.waitPods(t, ns, nil, "annotated for the new namespace and released", releaseTimeout, func(p *corev1.Pod) bool {
		sb, _ := e.kl.Sandbox(p.UID)
		return released(p) && waitStatus(p).RestartCount == 1 && p.Annotations[contract.KeyNetns] == sb.NetnsID
	})
	for _, p := range pods {
		e.verifyLive(t, p)
		if logs := e.kl.WaitLogs(p.UID); recordOn() && !strings.Contains(logs, "release record reports ready") {
			t.Errorf("pod %s: not released by the record:\n%s", p.Name, logs)
		}
	}
	e.checkInvariant(t, ns)
}

package realnode

// The release record and local discovery on the real node: a pod's sandbox re-created (its pause
// process killed) while the API server is stopped is found by the controller through containerd's
// CNI result cache, programmed from the cached spec, and its new wait container released through
// the record in the new namespace, all before the API server is back; then the annotations name
// the new namespace. Then the same with the controller upgraded to releaseRecord=false: programmed,
// but released only once the API server is back.

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/record"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

func TestAPIServerDownOnTheRealNode(t *testing.T) {
	cluster.Require(t)
	testutil.RequireRoot(t)
	ctx := t.Context()
	archives, err := BuildProjectImages(ctx, t.TempDir(), testLog{t})
	if err != nil {
		t.Fatalf("build the images: %v", err)
	}
	n := StartForTest(t, Options{Images: archives})
	// The record on whatever RecordEnv says: the test turns it off itself further down.
	if out, err := n.HelmInstall(ctx, "", release, controllerNS, "releaseRecord=true"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	n.waitPods(t, controllerNS, "the controller pod Ready", func(ps []corev1.Pod) bool { return len(ps) == 1 && podReady(&ps[0]) })
	n.meshNamespace(t)
	n.createMeshDeployment(t, 2, nil)
	pods := n.waitReleased(t, 2, nil)
	for _, p := range pods {
		checkRecord(t, p.UID, p.Annotations[contract.KeyNetns])
	}

	recreateWithAPIDown(t, n, pods[0], true)

	// The controller upgraded to releaseRecord=false (the wait containers keep their default): no
	// record, the new wait container waits for the annotation, which follows the API server.
	chart, err := ChartDir(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldCtrl := n.listPods(t, controllerNS)[0].UID
	if out, err := n.Helm(ctx, "upgrade", release, chart, "--namespace", controllerNS, "--reuse-values", "--set", "releaseRecord=false"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	n.waitPods(t, controllerNS, "the controller replaced and Ready", func(ps []corev1.Pod) bool {
		return len(ps) == 1 && ps[0].UID != oldCtrl && podReady(&ps[0])
	})
	recreateWithAPIDown(t, n, pods[1], false)
}

// recreateWithAPIDown kills the pod's pause process while the API server is stopped. The new
// sandbox must be programmed with the API server down; with the record its wait container exits 0
// then too, without it the wait container waits (and the namespace holds no record). Once the API
// server is back the annotations name the new namespace and the pod is Ready.
func recreateWithAPIDown(t *testing.T, n *Node, pod corev1.Pod, withRecord bool) {
	ctx := t.Context()
	oldPath, err := PodNetns(string(pod.UID))
	if err != nil {
		t.Fatal(err)
	}
	oldSandbox := readySandbox(t, n, pod.UID, "")
	if err := n.Cluster.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	apiUp := false
	defer func() {
		if !apiUp {
			_ = n.Cluster.StartAPIServer(ctx)
		}
	}()
	pid := sandboxPausePID(t, n, oldSandbox)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the pause process %d: %v", pid, err)
	}
	t0 := time.Now()
	var newSandbox, path string
	poll(t, "a new ready sandbox", func() bool { newSandbox = readySandbox(t, n, pod.UID, oldSandbox); return newSandbox != "" })
	poll(t, "the new sandbox's namespace in the CNI result cache", func() bool {
		path, err = PodNetns(string(pod.UID))
		return err == nil && path != oldPath
	})
	poll(t, "the new namespace programmed with the API server down", func() bool {
		out, err := exec.Command("nsenter", "--net="+path, "iptables-nft-save", "-t", "nat").CombinedOutput()
		return err == nil && strings.Contains(string(out), "-A ISTIO_OUTPUT")
	})
	t.Logf("figure: pause killed → new namespace programmed in %s, API server down (record %t)", time.Since(t0).Round(time.Millisecond), withRecord)
	h, err := netns.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := h.ID()
	h.Close()
	if err != nil {
		t.Fatal(err)
	}
	if withRecord {
		poll(t, "the new sandbox's wait container to exit 0 with the API server down", func() bool { return waitExitedIn(t, n, newSandbox) })
		t.Logf("figure: pause killed → new wait container exited 0 in %s, API server down", time.Since(t0).Round(time.Millisecond))
		checkRecord(t, pod.UID, id.String())
	} else {
		time.Sleep(3 * time.Second) // the wait container had every chance to see a record
		if waitExitedIn(t, n, newSandbox) {
			t.Fatal("released with the API server down and the record off")
		}
		if alias := aliasIn(t, path); alias != "" {
			t.Errorf("the record is off, the new namespace's lo alias is %q", alias)
		}
	}

	if err := n.Cluster.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	apiUp = true
	t1 := time.Now()
	n.waitPods(t, meshNS, "the annotations to name the new namespace", func(ps []corev1.Pod) bool {
		for _, p := range ps {
			if p.UID == pod.UID {
				return p.Annotations[contract.KeyNetns] == id.String() && p.Annotations[contract.KeyStatus] == string(contract.StatusReady) && podReady(&p)
			}
		}
		return false
	})
	t.Logf("figure: API server ready again → annotations name the new namespace and the pod is Ready in %s (record %t)", time.Since(t1).Round(time.Millisecond), withRecord)
}

func aliasIn(t *testing.T, path string) string {
	t.Helper()
	h, err := netns.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var alias string
	if err := h.Do(func() (err error) { alias, err = record.ReadAlias(); return err }); err != nil {
		t.Fatal(err)
	}
	return alias
}

// checkRecord checks the release record in the pod's current namespace: ready for id.
func checkRecord(t *testing.T, uid types.UID, id string) {
	t.Helper()
	path, err := PodNetns(string(uid))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := readRecordAt(path)
	if err != nil {
		t.Fatalf("pod %s: release record in %s: %v", uid, path, err)
	}
	if rec.Status != contract.StatusReady || rec.Netns.String() != id {
		t.Errorf("pod %s: release record %q, want ready for %s", uid, rec, id)
	}
}

// readySandbox returns the pod's ready sandbox other than not ("" when there is none yet).
func readySandbox(t *testing.T, n *Node, uid types.UID, not string) string {
	t.Helper()
	out, err := n.Crictl(t.Context(), "pods", "--state", "ready", "--label", "io.kubernetes.pod.uid="+string(uid), "-q")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range strings.Fields(string(out)) {
		if id != not {
			return id
		}
	}
	return ""
}

func sandboxPausePID(t *testing.T, n *Node, sandbox string) int {
	t.Helper()
	out, err := n.Crictl(t.Context(), "inspectp", "-o", "go-template", "--template", "{{.info.pid}}", sandbox)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(strings.TrimSpace(string(out)), &pid); err != nil || pid <= 1 {
		t.Fatalf("sandbox %s: pid %q", sandbox, out)
	}
	return pid
}

// waitExitedIn reports whether the wait container of sandbox exited 0 (CRI, no API server).
func waitExitedIn(t *testing.T, n *Node, sandbox string) bool {
	t.Helper()
	out, err := n.Crictl(t.Context(), "ps", "-a", "--pod", sandbox, "--name", harness.WaitContainer, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Containers []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"containers"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("crictl ps: %v\n%s", err, out)
	}
	for _, c := range list.Containers {
		if c.State != "CONTAINER_EXITED" {
			continue
		}
		code, err := n.Crictl(t.Context(), "inspect", "-o", "go-template", "--template", "{{.status.exitCode}}", c.ID)
		if err == nil && strings.TrimSpace(string(code)) == "0" {
			return true
		}
	}
	return false
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, podTimeout, true, func(context.Context) (bool, error) {
		return cond(), nil
	}); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

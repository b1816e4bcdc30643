package kubelet

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/redhat-cop/istio-pod-network-controller/initwait/waittest"
)

// runPhase is the state of the wait container in the current sandbox.
type runPhase int

const (
	runNotStarted runPhase = iota
	runRunning
	runExited
)

// containerRun is one run of the wait container.
type containerRun struct {
	phase    runPhase
	id       string // container ID as the status shows it
	started  time.Time
	finished time.Time
	exitCode int
	message  string
	restarts int32 // earlier runs of this container in this pod
}

// statusInput is what the pod status is computed from.
type statusInput struct {
	pod          *corev1.Pod
	waitName     string
	hostIP       string
	podIPs       []netip.Addr // nil until the sandbox is up
	startTime    time.Time
	sandboxReady time.Time // zero: no sandbox
	sandboxID    string
	wait         containerRun
}

// hasContainer reports whether pod has an init container named name.
func hasInitContainer(pod *corev1.Pod, name string) bool {
	return initContainer(pod, name) != nil
}

func initContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}

// released reports whether the pod's containers may run: no wait container, or it exited 0.
func (in statusInput) released() bool {
	if !hasInitContainer(in.pod, in.waitName) {
		return !in.sandboxReady.IsZero()
	}
	return in.wait.phase == runExited && in.wait.exitCode == 0
}

// buildStatus computes the status the kubelet would report. It is a pure function of its input, so
// an unchanged input gives byte-identical JSON and no patch.
func buildStatus(in statusInput) corev1.PodStatus {
	pod := in.pod
	released := in.released()
	st := corev1.PodStatus{Phase: corev1.PodPending, HostIP: in.hostIP}
	if in.hostIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: in.hostIP}}
	}
	if !in.startTime.IsZero() {
		t := metav1.NewTime(in.startTime)
		st.StartTime = &t
	}
	for i, ip := range in.podIPs {
		if i == 0 {
			st.PodIP = ip.String()
		}
		st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip.String()})
	}
	// The instant the regular containers (and native sidecars) started.
	mainStart := in.sandboxReady
	if hasInitContainer(pod, in.waitName) {
		mainStart = in.wait.finished
	}
	waitIndex := -1
	for i, c := range pod.Spec.InitContainers {
		if c.Name == in.waitName {
			waitIndex = i
		}
	}
	for i, c := range pod.Spec.InitContainers {
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ContainerID: in.containerID(c.Name)}
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		switch {
		case in.sandboxReady.IsZero():
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
			cs.ContainerID = ""
		case c.Name == in.waitName:
			cs = waitStatus(cs, in.wait)
		case sidecar && released:
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(mainStart)}
			cs.Ready, cs.Started = true, ptr(true)
		case !sidecar && (released || i < waitIndex):
			cs.State.Terminated = &corev1.ContainerStateTerminated{Reason: "Completed", ContainerID: cs.ContainerID,
				StartedAt: metav1.NewTime(in.sandboxReady), FinishedAt: metav1.NewTime(in.sandboxReady)}
			cs.Started = ptr(false)
		default:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
			cs.ContainerID = ""
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
	}
	for _, c := range pod.Spec.Containers {
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image}
		if released {
			cs.ContainerID = in.containerID(c.Name)
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(mainStart)}
			cs.Ready, cs.Started = true, ptr(true)
		} else {
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
			cs.Started = ptr(false)
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	failedInit := in.wait.phase == runExited && in.wait.exitCode != 0
	switch {
	case released:
		st.Phase = corev1.PodRunning
	case failedInit && pod.Spec.RestartPolicy == corev1.RestartPolicyNever:
		st.Phase = corev1.PodFailed
	}
	cond := func(t corev1.PodConditionType, ok bool, at time.Time, reason string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, LastTransitionTime: metav1.NewTime(at)}
		if ok {
			c.Status = corev1.ConditionTrue
		} else {
			c.Reason = reason
		}
		return c
	}
	initReason := "ContainersNotInitialized"
	if failedInit {
		initReason = "ContainersNotInitialized: init container " + in.waitName + " exited " + fmt.Sprint(in.wait.exitCode)
	}
	at := in.startTime
	if released {
		at = mainStart
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, !in.sandboxReady.IsZero(), firstNonZero(in.sandboxReady, in.startTime), ""),
		cond(corev1.PodInitialized, released, at, initReason),
		cond(corev1.ContainersReady, released, at, "ContainersNotReady"),
		cond(corev1.PodReady, released, at, "ContainersNotReady"),
		cond(corev1.PodScheduled, true, in.startTime, ""),
	}
	return st
}

// waitStatus is the wait container's status for one run.
func waitStatus(cs corev1.ContainerStatus, run containerRun) corev1.ContainerStatus {
	cs.RestartCount = run.restarts
	cs.ContainerID = run.id
	switch run.phase {
	case runRunning:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(run.started)}
		cs.Started = ptr(true)
	case runExited:
		reason := "Completed"
		if run.exitCode != 0 {
			reason = "Error"
		}
		cs.State.Terminated = &corev1.ContainerStateTerminated{
			ExitCode: int32(run.exitCode), Reason: reason, Message: run.message, ContainerID: run.id,
			StartedAt: metav1.NewTime(run.started), FinishedAt: metav1.NewTime(run.finished),
		}
		cs.Started = ptr(false)
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
		cs.ContainerID = ""
	}
	return cs
}

// containerID is a stable container ID for a container of the current sandbox.
func (in statusInput) containerID(name string) string {
	return containerID(in.sandboxID, name, 0)
}

// containerID derives a containerd-style ID from the sandbox, the container name and the run.
func containerID(sandboxID, name string, run int32) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%d", sandboxID, name, run))
	return "containerd://" + hex.EncodeToString(sum[:])
}

func firstNonZero(ts ...time.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

func ptr[T any](v T) *T { return &v }

// ipFamilies returns whether the pod asks for an IPv6 address too (AnnotationIPFamilies).
func ipFamilies(pod *corev1.Pod) (dual bool, err error) {
	v, ok := pod.Annotations[AnnotationIPFamilies]
	if !ok {
		return false, nil
	}
	switch strings.ReplaceAll(v, " ", "") {
	case FamiliesIPv4:
		return false, nil
	case FamiliesDual:
		return true, nil
	}
	return false, fmt.Errorf("annotation %s: %q: want %q or %q", AnnotationIPFamilies, v, FamiliesIPv4, FamiliesDual)
}

// volumeFiles renders the files of a downward-API volume (or of the downward-API sources of a
// projected volume) for pod, as the kubelet does; other volume kinds have no files here.
func volumeFiles(pod *corev1.Pod, v *corev1.Volume) (map[string][]byte, error) {
	var items []corev1.DownwardAPIVolumeFile
	switch {
	case v.DownwardAPI != nil:
		items = v.DownwardAPI.Items
	case v.Projected != nil:
		for _, src := range v.Projected.Sources {
			if src.DownwardAPI != nil {
				items = append(items, src.DownwardAPI.Items...)
			}
		}
	default:
		return nil, nil
	}
	files := map[string][]byte{}
	for _, it := range items {
		if it.FieldRef == nil {
			return nil, fmt.Errorf("volume %q item %q: only fieldRef items are simulated", v.Name, it.Path)
		}
		content, err := fieldValue(pod, it.FieldRef.FieldPath)
		if err != nil {
			return nil, fmt.Errorf("volume %q item %q: %w", v.Name, it.Path, err)
		}
		files[it.Path] = content
	}
	return files, nil
}

// fieldValue renders one downward-API field path as the kubelet does.
func fieldValue(pod *corev1.Pod, path string) ([]byte, error) {
	switch path {
	case "metadata.annotations":
		return waittest.Format(pod.Annotations), nil
	case "metadata.labels":
		return waittest.Format(pod.Labels), nil
	case "metadata.name":
		return []byte(pod.Name), nil
	case "metadata.namespace":
		return []byte(pod.Namespace), nil
	case "metadata.uid":
		return []byte(pod.UID), nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.annotations": pod.Annotations, "metadata.labels": pod.Labels} {
		if key, ok := strings.CutPrefix(path, prefix+"['"); ok {
			if key, ok = strings.CutSuffix(key, "']"); ok {
				return []byte(m[key]), nil
			}
		}
	}
	return nil, fmt.Errorf("field path %q is not simulated", path)
}

package controller

import (
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

// readings is everything the controller reads of a cached pod, through the functions that read
// it: selection, the pod to configuration mapping, the fingerprint, the change filter.
type readings struct {
	Skip, Conflict, Wait, Fingerprint string
	Candidate, HoldsClaim             bool
	Ours                              annotations
	IPs                               string
	Config                            string // FromPod's configuration or error, rendered
	Proxy                             bool
}

func read(pod *corev1.Pod) readings {
	cfg, err := podconfig.FromPod(pod)
	rendered := fmt.Sprintf("%+v", cfg)
	if err != nil {
		rendered = "error: " + err.Error()
	}
	return readings{
		Skip: skipReason(pod, testNode, DefaultWaitContainerName), Conflict: conflictingInit(pod),
		Wait: waitRunning(pod, DefaultWaitContainerName), Fingerprint: fingerprint(pod),
		Candidate: isCandidate(pod, DefaultWaitContainerName), HoldsClaim: holdsClaim(pod, testNode),
		Ours: ours(pod), IPs: fmt.Sprint(podconfig.PodIPs(pod)), Config: rendered, Proxy: podconfig.Proxy(pod) != nil,
	}
}

// fullPod is a pod as the API server sends it: managed fields, labels, many annotations, every
// container spec in full, conditions and statuses.
func fullPod(i int) *corev1.Pod {
	always := corev1.ContainerRestartPolicyAlways
	uid, gid := int64(1337), int64(1337)
	env := []corev1.EnvVar{{Name: podconfig.EnvDNSCapture, Value: "true"}, {Name: podconfig.EnvDualStack, Value: "false"},
		{Name: podconfig.EnvInvalidDrop, Value: "x"}, {Name: podconfig.EnvDNSCapture, Value: "false"}, {Name: "POD_NAME",
			ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}
	for k := range 30 {
		env = append(env, corev1.EnvVar{Name: fmt.Sprintf("ISTIO_META_%d", k), Value: fmt.Sprintf("value-of-meta-variable-%d", k)})
	}
	p := meshPod(fmt.Sprintf("pod-%d", i), fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), func(p *corev1.Pod) {
		p.Labels = map[string]string{"app": "web", "version": "v1", "security.istio.io/tlsMode": "istio"}
		p.Annotations["kubectl.kubernetes.io/last-applied-configuration"] = strings.Repeat("x", 2048)
		p.Annotations["sidecar.istio.io/status"] = `{"initContainers":["istio-pod-network-wait"],"containers":["istio-proxy"],"volumes":["workload-socket","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"]}`
		p.Annotations[istioapi.AnnotationExcludeOutboundPorts] = "9000,9001"
		p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate,
			FieldsV1: &metav1.FieldsV1{Raw: managedFields}}}
		p.Spec.Containers[1].Env = env
		p.Spec.Containers[1].Args = []string{"proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"}
		p.Spec.Containers[1].SecurityContext = &corev1.SecurityContext{RunAsUser: &uid, RunAsGroup: &gid}
		p.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: "istio-envoy", MountPath: "/etc/istio/proxy"}}
		p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: "warmup", RestartPolicy: &always})
		p.Spec.Volumes = []corev1.Volume{{Name: "istio-envoy", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady"}}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Image: "app"}, {Name: "istio-proxy", Image: "proxyv2"}}
		p.Status.InitContainerStatuses = append(p.Status.InitContainerStatuses, corev1.ContainerStatus{Name: "warmup",
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}})
	})
	return p
}

// managedFields is 4 KiB of fieldsV1 JSON.
var managedFields = func() []byte {
	var b strings.Builder
	b.WriteString(`{"f:status":{`)
	for i := range 150 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"f:field-%03d":{}`, i)
	}
	b.WriteString("}}")
	return []byte(b.String())
}()

func checkTrimmed(t *testing.T, full *corev1.Pod) {
	t.Helper()
	before := full.DeepCopy()
	obj, err := TrimPod(DefaultWaitContainerName)(full)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(full, before) {
		t.Fatal("the transform changed the pod it was given")
	}
	trimmed := obj.(*corev1.Pod)
	if got, want := read(trimmed), read(full); !reflect.DeepEqual(got, want) {
		t.Fatalf("trimmed pod reads differently:\n got %+v\nwant %+v", got, want)
	}
	// The change filter and the own-patch filter see no difference between the two either.
	c := &Controller{waitContainer: DefaultWaitContainerName}
	if c.relevantChange(full, trimmed) || c.relevantChange(trimmed, full) {
		t.Fatal("relevantChange sees a difference between the full and the trimmed pod")
	}
}

func TestTrimPodKeepsWhatIsRead(t *testing.T) {
	checkTrimmed(t, fullPod(1))
	native := fullPod(2)
	native.Spec.Containers = native.Spec.Containers[:1]
	always := corev1.ContainerRestartPolicyAlways
	native.Spec.InitContainers = append(native.Spec.InitContainers, corev1.Container{Name: podconfig.ProxyContainer, RestartPolicy: &always,
		Env: []corev1.EnvVar{{Name: podconfig.EnvInvalidDrop, Value: "true"}}})
	checkTrimmed(t, native)
	released := fullPod(3)
	annotate(contract.KeyStatus, "ready", contract.KeyNetns, "cookie:9", contract.KeyRules, "abc", contract.KeyFamilies, "ipv4")(released)
	checkTrimmed(t, released)

	tomb, err := TrimPod(DefaultWaitContainerName)(cache.DeletedFinalStateUnknown{Key: "app/pod-1", Obj: fullPod(1)})
	if err != nil {
		t.Fatal(err)
	}
	if p := tomb.(cache.DeletedFinalStateUnknown).Obj.(*corev1.Pod); p.ManagedFields != nil || len(p.Annotations) != 1 {
		t.Fatalf("tombstone not trimmed: %d annotations", len(p.Annotations))
	}
}

// FuzzTrimPod: for any pod (JSON, seeded with realistic ones), the functions that read cached
// pods give the same results on the trimmed pod as on the full one.
func FuzzTrimPod(f *testing.F) {
	for i, p := range []*corev1.Pod{fullPod(1), meshPod("plain", "fd00::5"), meshPod("x", "")} {
		if i == 1 {
			annotate(istioapi.AnnotationInterceptionMode, "TPROXY", istioapi.AnnotationIncludeOutboundIPRanges, "10.0.0.0/8,fd00::/8",
				istioapi.AnnotationRerouteVirtual, "eth1,eth1", contract.KeyStatus, "pending")(p)
			p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: "istio-init"})
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: "10.1.0.5"})
		}
		data, err := json.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var pod corev1.Pod
		if err := json.Unmarshal(data, &pod); err != nil {
			t.Skip()
		}
		checkTrimmed(t, &pod)
	})
}

// BenchmarkInformerCache measures the heap the pod informer's cache holds per pod, full pods
// against pods trimmed by TrimPod (the controller's transform).
//
//	go test -run '^$' -bench InformerCache -benchtime 1x ./controller/
func BenchmarkInformerCache(b *testing.B) {
	const pods = 2000
	for _, tc := range []struct {
		name      string
		transform cache.TransformFunc
	}{{"full", nil}, {"trimmed", TrimPod(DefaultWaitContainerName)}} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				objs := make([]kruntime.Object, pods)
				for i := range objs {
					objs[i] = fullPod(i)
				}
				client := fake.NewClientset(objs...)
				objs = nil
				factory := informers.NewSharedInformerFactory(client, 0)
				inf := factory.Core().V1().Pods().Informer()
				if tc.transform != nil {
					if err := inf.SetTransform(tc.transform); err != nil {
						b.Fatal(err)
					}
				}
				before := heap()
				stop := make(chan struct{})
				factory.Start(stop)
				if !cache.WaitForCacheSync(stop, inf.HasSynced) {
					b.Fatal("no sync")
				}
				// The fake API server's own copies were made before: the difference is the
				// informer's cache (and the list it was filled from, if not yet collected).
				after := heap()
				b.ReportMetric(float64(after-before)/pods/1024, "heap-KiB/pod")
				if n := len(inf.GetStore().List()); n != pods {
					b.Fatalf("cached %d pods", n)
				}
				close(stop)
				factory.Shutdown()
				runtime.KeepAlive(client)
			}
		})
	}
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

package harness

import (
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/kubelet"
)

// The wait container as the chart's injection template adds it.
const (
	WaitContainer   = "istio-pod-network-wait"
	WaitVolume      = "istio-pod-network-annotations"
	WaitMountPath   = "/etc/istio-pod-network"
	WaitArg         = "--annotations-file=/etc/istio-pod-network/annotations"
	WaitImage       = "quay.io/redhat-cop/istio-pod-network-wait:e2e"
	DefaultProxyUID = 1337
)

// PodOption changes a pod made by MeshPod.
type PodOption func(*corev1.Pod)

// MeshPod returns a mesh pod bound to node, shaped as the chart's injection template makes them
// (classic istio-proxy container, REDIRECT): the wait init container first, running as the proxy
// UID/GID, restricted-compliant security contexts, and the downward-API volume with the pod's
// annotations.
func MeshPod(namespace, name, node string, opts ...PodOption) *corev1.Pod {
	uid := int64(DefaultProxyUID)
	restricted := func(user int64) *corev1.SecurityContext {
		return &corev1.SecurityContext{
			RunAsUser: &user, RunAsGroup: &user, RunAsNonRoot: ptr(true),
			AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true), Privileged: ptr(false),
			Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name,
			Labels:      map[string]string{"app": name, "security.istio.io/tlsMode": "istio"},
			Annotations: map[string]string{"sidecar.istio.io/interceptionMode": "REDIRECT"},
		},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: ptr(int64(1)),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			InitContainers: []corev1.Container{{
				Name: WaitContainer, Image: WaitImage, Args: []string{WaitArg},
				SecurityContext: restricted(uid),
				VolumeMounts:    []corev1.VolumeMount{{Name: WaitVolume, MountPath: WaitMountPath, ReadOnly: true}},
			}},
			Containers: []corev1.Container{
				{Name: "app", Image: "registry.example/app:1.0", SecurityContext: restricted(1000),
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}},
				{Name: podconfig.ProxyContainer, Image: "registry.istio.io/proxyv2:e2e", Args: []string{"proxy", "sidecar"},
					SecurityContext: restricted(uid)},
			},
			Volumes: []corev1.Volume{{Name: WaitVolume, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
				Items: []corev1.DownwardAPIVolumeFile{{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}}},
			}}}},
		},
	}
	for _, o := range opts {
		o(pod)
	}
	return pod
}

// WithProxyUID runs istio-proxy and the wait container as uid (user and group), as the injection
// template does for a custom proxy UID (OpenShift assigns e.g. 1000670000).
func WithProxyUID(uid int64) PodOption {
	return func(p *corev1.Pod) {
		for _, c := range []*corev1.Container{container(p, WaitContainer), container(p, podconfig.ProxyContainer)} {
			if c != nil {
				c.SecurityContext.RunAsUser, c.SecurityContext.RunAsGroup = ptr(uid), ptr(uid)
			}
		}
	}
}

// WithAnnotations adds annotations.
func WithAnnotations(kv map[string]string) PodOption {
	return func(p *corev1.Pod) {
		for k, v := range kv {
			p.Annotations[k] = v
		}
	}
}

// DualStack gives the pod an IPv6 address too (the simulator's annotation) and turns on Istio's
// dual-stack rules (ISTIO_DUAL_STACK on istio-proxy).
func DualStack() PodOption {
	return func(p *corev1.Pod) {
		p.Annotations[kubelet.AnnotationIPFamilies] = kubelet.FamiliesDual
		c := container(p, podconfig.ProxyContainer)
		c.Env = append(c.Env, corev1.EnvVar{Name: podconfig.EnvDualStack, Value: "true"})
	}
}

// WithWaitArgs appends args to the wait container's (as the injection template's
// --release-record=false).
func WithWaitArgs(args ...string) PodOption {
	return func(p *corev1.Pod) {
		if c := container(p, WaitContainer); c != nil {
			c.Args = append(c.Args, args...)
		}
	}
}

// WithoutWait removes the wait container and its volume: a pod injected without this project.
func WithoutWait() PodOption {
	return func(p *corev1.Pod) {
		p.Spec.InitContainers = nil
		p.Spec.Volumes = nil
	}
}

// HostNetwork makes the pod use the node's network namespace.
func HostNetwork() PodOption {
	return func(p *corev1.Pod) { p.Spec.HostNetwork = true }
}

func container(p *corev1.Pod, name string) *corev1.Container {
	for _, list := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

// LoadPod reads a pod manifest (YAML), such as the injector's output in test/injection/testdata.
func LoadPod(path string) (*corev1.Pod, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pod := &corev1.Pod{}
	if err := yaml.UnmarshalStrict(data, pod); err != nil {
		return nil, fmt.Errorf("pod manifest %s: %w", path, err)
	}
	return pod, nil
}

func ptr[T any](v T) *T { return &v }

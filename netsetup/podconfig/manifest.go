package podconfig

import (
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// maxManifest bounds what ReadPod reads: a pod object is far smaller.
const maxManifest = 4 << 20

// ReadPod reads one Pod manifest, YAML or JSON. Unknown fields and other kinds are errors.
func ReadPod(r io.Reader, name string) (*corev1.Pod, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(data) > maxManifest {
		return nil, fmt.Errorf("read %s: larger than %d bytes", name, maxManifest)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(data, &pod); err != nil {
		return nil, fmt.Errorf("%s: not a valid Pod manifest: %w", name, err)
	}
	if pod.Kind != "Pod" || pod.APIVersion != "v1" {
		return nil, fmt.Errorf("%s: kind %q apiVersion %q: want a v1 Pod", name, pod.Kind, pod.APIVersion)
	}
	return &pod, nil
}

package kubelet

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/initwait/waittest"
)

// Volumes: the downward API and projected files the wait container reads, published atomically.

// publishVolumes writes the wait container's downward-API volumes into its root file system when
// their content changed, with the kubelet's atomic symlink swap; other volumes are empty
// directories.
func (k *Kubelet) publishVolumes(pod *corev1.Pod, st *podState, c *corev1.Container) error {
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			return fmt.Errorf("container %q mounts volume %q, which the pod does not declare", c.Name, m.Name)
		}
		dir, err := inRoot(st.rootfs(), m.MountPath)
		if err != nil {
			return fmt.Errorf("container %q volume %q: %w", c.Name, m.Name, err)
		}
		files, err := volumeFiles(pod, &pod.Spec.Volumes[i])
		if err != nil {
			return err
		}
		if files == nil {
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return err
			}
			if err := os.Chmod(dir, 0o1777); err != nil {
				return err
			}
			continue
		}
		var sum bytes.Buffer
		for _, name := range slices.Sorted(maps.Keys(files)) {
			fmt.Fprintf(&sum, "%q=%q\n", name, files[name])
		}
		if bytes.Equal(st.volumes[dir], sum.Bytes()) {
			continue
		}
		if err := waittest.WriteAtomic(dir, files); err != nil {
			return fmt.Errorf("publish volume %q: %w", m.Name, err)
		}
		st.volumes[dir] = sum.Bytes()
	}
	return nil
}

// inRoot joins an absolute container path to a root directory, refusing paths that leave it.
func inRoot(root, p string) (string, error) {
	if !filepath.IsAbs(p) || slices.Contains(strings.Split(p, "/"), "..") {
		return "", fmt.Errorf("path %q: want an absolute path without \"..\"", p)
	}
	return filepath.Join(root, p), nil
}

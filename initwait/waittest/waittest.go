// Package waittest writes downward-API volumes the way the kubelet does, for tests of the wait
// container and for the simulated kubelet of the end-to-end tests.
//
// The kubelet renders a pod's annotations with Format (its fieldpath.FormatMap) and publishes a
// volume with an atomic symlink swap (its AtomicWriter): the files go into a fresh hidden
// directory "..<timestamp>", a symlink "..data_tmp" to it is renamed over "..data", and each
// visible file is a symlink "<name> -> ..data/<name>". Readers therefore see either the old or the
// new content, never a mix.
package waittest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Format renders annotations exactly as the kubelet's downward API does: one key="value" line per
// annotation, keys sorted, values quoted with Go's %q, no newline after the last line.
func Format(annotations map[string]string) []byte {
	keys := make([]string, 0, len(annotations))
	for k := range annotations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%v=%q\n", k, annotations[k])
	}
	return []byte(strings.TrimSuffix(b.String(), "\n"))
}

// WriteAtomic publishes files (name -> content) in dir as the kubelet's AtomicWriter does, creating
// dir if needed. Directories are created 0755 and files 0644, readable by an unprivileged reader.
func WriteAtomic(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	oldTarget, _ := os.Readlink(filepath.Join(dir, "..data"))
	tsDir, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return err
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(tsDir, name), content, 0o644); err != nil {
			return err
		}
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				return err
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(tsDir), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	if oldTarget != "" {
		return os.RemoveAll(filepath.Join(dir, oldTarget))
	}
	return nil
}

// WriteAnnotations publishes annotations as the file "annotations" of the downward-API volume dir,
// the layout the wait container's default --annotations-file expects.
func WriteAnnotations(dir string, annotations map[string]string) error {
	return WriteAtomic(dir, map[string][]byte{"annotations": Format(annotations)})
}

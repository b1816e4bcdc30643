package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Epoch is the time stamp of every file, layer and config the package writes, so that the same
// inputs give the same image digest.
var Epoch = time.Unix(0, 0).UTC()

// maxFileSize bounds one file of a files layer (the controller binary is about 40 MB).
const maxFileSize = 256 << 20

// Static returns a single-layer image FROM scratch holding files (path in the image → file on this
// machine, each copied as mode 0755 owned by root), starting entrypoint as user ("UID:GID"), with
// PATH set. Use it for small test images of static Go binaries (a pause image, a stand-in proxy).
func Static(files map[string]string, entrypoint []string, user string) (v1.Image, error) {
	return assemble(nil, files, v1.Config{Entrypoint: entrypoint, User: user})
}

// assemble stacks base layers, a layer with files, and a config.
func assemble(base []v1.Layer, files map[string]string, cfg v1.Config) (v1.Image, error) {
	if err := checkUser(cfg.User); err != nil {
		return nil, err
	}
	if len(cfg.Entrypoint) == 0 {
		return nil, fmt.Errorf("image config: entrypoint: empty")
	}
	top, err := filesLayer(files)
	if err != nil {
		return nil, err
	}
	cfg.Env = []string{"PATH=" + Path}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: Epoch},
		Config:       cfg,
	})
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	var adds []mutate.Addendum
	for _, l := range append(base, top) {
		adds = append(adds, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: Epoch}, CreatedBy: "test/images"}})
	}
	if img, err = mutate.Append(img, adds...); err != nil {
		return nil, fmt.Errorf("image layers: %w", err)
	}
	return img, nil
}

// filesLayer packs files (path in the image → file here) with their parent directories into one
// uncompressed tar, in path order, with fixed owners and times.
func filesLayer(files map[string]string) (v1.Layer, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("image files: none")
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		if err := checkImagePath(p); err != nil {
			return nil, fmt.Errorf("image file: %w", err)
		}
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, p := range paths {
		for _, d := range parents(p) {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: Epoch, Format: tar.FormatPAX}); err != nil {
				return nil, fmt.Errorf("image file %s: %w", p, err)
			}
		}
		if err := addFile(tw, p, files[p]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image files: %w", err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return nil, fmt.Errorf("image files layer: %w", err)
	}
	return l, nil
}

// parents lists p's parent directories without the leading "/", outermost first: "/a/b/c" → a, a/b.
func parents(p string) []string {
	var out []string
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		out = append([]string{d[1:]}, out...)
	}
	return out
}

func addFile(tw *tar.Writer, imagePath, hostPath string) error {
	f, err := os.Open(hostPath)
	if err != nil {
		return fmt.Errorf("image file %s: %w", imagePath, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("image file %s: %w", imagePath, err)
	}
	if !st.Mode().IsRegular() || st.Size() > maxFileSize {
		return fmt.Errorf("image file %s: %s is not a regular file of at most %d bytes", imagePath, hostPath, maxFileSize)
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: imagePath[1:], Mode: 0o755, Size: st.Size(), ModTime: Epoch, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("image file %s: %w", imagePath, err)
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("image file %s from %s: %w", imagePath, hostPath, err)
	}
	return nil
}

// WriteArchive writes images (full tag, e.g. "ghcr.io/redhat-cop/x:v1" → image) to path as one
// docker-archive tarball that `ctr images import`, `podman load`, `docker load` and
// `kind load image-archive` read. It writes a temporary file next to path and renames it, so a
// reader never sees a partial archive.
func WriteArchive(path string, imgs map[string]v1.Image) error {
	if len(imgs) == 0 {
		return fmt.Errorf("image archive %s: no images", path)
	}
	tags := map[name.Tag]v1.Image{}
	for s, img := range imgs {
		tag, err := name.NewTag(s, name.StrictValidation)
		if err != nil {
			return fmt.Errorf("image archive %s: tag %q: %w", path, s, err)
		}
		tags[tag] = img
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("image archive: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("image archive: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tarball.MultiWrite(tags, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("image archive %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("image archive %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("image archive %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("image archive %s: %w", path, err)
	}
	return nil
}

// Tag is the full tag of spec's image under repo (e.g. "ghcr.io/redhat-cop") at version.
func Tag(repo string, spec Spec, version string) string {
	return strings.TrimSuffix(repo, "/") + "/" + spec.Name + ":" + version
}

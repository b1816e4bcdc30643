package images

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const repoRoot = "../.."

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries returns the directory of `make build`'s binaries, built once per test run.
func binaries(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "images-bin-"); binErr != nil {
			return
		}
		abs, err := filepath.Abs(repoRoot)
		if err != nil {
			binErr = err
			return
		}
		binErr = MakeBuild(context.Background(), abs, binDir, "test")
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

// reload writes img to an archive under tag and reads it back as `docker load` would.
func reload(t *testing.T, tag string, img v1.Image) (v1.Image, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "image.tar")
	if err := WriteArchive(path, map[string]v1.Image{tag: img}); err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(tag, name.StrictValidation)
	if err != nil {
		t.Fatal(err)
	}
	back, err := tarball.ImageFromPath(path, &ref)
	if err != nil {
		t.Fatalf("reading %s back as %s: %v", path, tag, err)
	}
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(path) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || len(m[0].RepoTags) != 1 || m[0].RepoTags[0] != tag {
		t.Fatalf("archive manifest %+v, want one image tagged %s", m, tag)
	}
	return back, path
}

// entry is one file of a layer.
type entry struct {
	hdr  *tar.Header
	data []byte
}

// layerFiles reads a layer's entries by name (regular files with their contents up to limit bytes).
func layerFiles(t *testing.T, l v1.Layer, limit int64) map[string]entry {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		e := entry{hdr: hdr}
		if hdr.Typeflag == tar.TypeReg && hdr.Size <= limit {
			if e.data, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
		out[hdr.Name] = e
	}
}

func configOf(t *testing.T, img v1.Image) *v1.ConfigFile {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

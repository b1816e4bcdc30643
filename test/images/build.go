package images

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Image builds spec's image from the binaries in binDir (the output of `make build`) and, for a
// Debian base, the root file system cached in cacheDir (see RootFS; built on first use).
func Image(ctx context.Context, spec Spec, binDir, cacheDir string) (v1.Image, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	files := map[string]string{}
	for _, f := range spec.Files {
		files[f.Path] = filepath.Join(binDir, f.Binary)
	}
	var base []v1.Layer
	if !spec.Base.Scratch() {
		p, err := RootFS(ctx, spec.Base, cacheDir)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", spec.Name, err)
		}
		l, err := tarball.LayerFromFile(p)
		if err != nil {
			return nil, fmt.Errorf("image %s: root file system layer %s: %w", spec.Name, p, err)
		}
		base = append(base, l)
	}
	img, err := assemble(base, files, v1.Config{Entrypoint: spec.Entrypoint, Cmd: spec.Cmd, User: spec.User})
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", spec.Name, err)
	}
	return img, nil
}

// Options say what Build builds and where it writes.
type Options struct {
	Specs    []Spec
	BinDir   string // the binaries, built by `make build`
	OutDir   string // the archives, one per image: OutDir/<Name>.tar
	Repo     string // e.g. "ghcr.io/redhat-cop"
	Version  string // the tag
	CacheDir string // root file systems (DefaultCacheDir)
	Progress io.Writer
}

// Build writes one docker-archive per spec, tagged Tag(Repo, spec, Version), and reports progress as
// "step N of M" lines. It returns the archives' paths in spec order.
func Build(ctx context.Context, o Options) ([]string, error) {
	total := len(o.Specs)
	for _, s := range o.Specs {
		if !s.Base.Scratch() {
			total++
		}
	}
	step := 0
	say := func(format string, args ...any) {
		step++
		fmt.Fprintf(o.Progress, "step %d of %d: %s\n", step, total, fmt.Sprintf(format, args...))
	}
	var out []string
	for _, s := range o.Specs {
		if err := s.Validate(); err != nil {
			return nil, err
		}
		if !s.Base.Scratch() {
			if p, ok := CachedRootFS(s.Base, o.CacheDir); ok {
				say("the %s root file system of %s: cached (%s)", s.Base.Suite, s.Name, p)
			} else {
				say("building the %s root file system of %s with mmdebstrap (a few minutes: 1.5 on an idle 2-core machine, 5 under load; cached afterwards in %s; log %s)",
					s.Base.Suite, s.Name, o.CacheDir, filepath.Join(o.CacheDir, CacheKey(s.Base)+".log"))
				start := time.Now()
				if _, err := RootFS(ctx, s.Base, o.CacheDir); err != nil {
					return nil, err
				}
				fmt.Fprintf(o.Progress, "  built in %s\n", time.Since(start).Round(time.Second))
			}
		}
		tag := Tag(o.Repo, s, o.Version)
		path := filepath.Join(o.OutDir, s.Name+".tar")
		say("writing %s (%s)", path, tag)
		img, err := Image(ctx, s, o.BinDir, o.CacheDir)
		if err != nil {
			return nil, err
		}
		if err := WriteArchive(path, map[string]v1.Image{tag: img}); err != nil {
			return nil, err
		}
		if st, err := os.Stat(path); err == nil {
			fmt.Fprintf(o.Progress, "  %.1f MB\n", float64(st.Size())/1e6)
		}
		out = append(out, path)
	}
	return out, nil
}

// MakeBuild runs `make build` of the module at root into binDir with version: the same static
// binaries the Dockerfile's build stage and `make images` pack.
func MakeBuild(ctx context.Context, root, binDir, version string) error {
	cmd := exec.CommandContext(ctx, "make", "-C", root, "--no-print-directory", "build", "BIN="+binDir, "VERSION="+version)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("make build BIN=%s: %w\n%s", binDir, err, out)
	}
	if _, err := os.Stat(binDir); err != nil {
		return fmt.Errorf("make build BIN=%s: %w", binDir, err)
	}
	return nil
}

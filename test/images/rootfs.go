package images

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// rootfsRecipe names the filter below: change it when filterRootFS changes, so cached root file
// systems made by the old filter are not reused.
const rootfsRecipe = "rootfs-filter-1"

// DefaultCacheDir is where root file systems are cached: ~/.cache/istio-pod-network-controller/rootfs
// (next to the Kubernetes tools the tests build).
func DefaultCacheDir() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("root file system cache: %w", err)
	}
	return filepath.Join(home, ".cache", "istio-pod-network-controller", "rootfs"), nil
}

// mmdebstrapArgs are the arguments that build base, before the output file. --variant=apt installs
// the essential packages, apt and the listed packages without their recommends; the dpkg options keep
// documentation, manual pages and translations out, as Debian's slim images do (copyright files
// stay).
func mmdebstrapArgs(base Base) []string {
	return []string{
		"--variant=apt",
		"--format=tar",
		"--include=" + strings.Join(base.Packages, ","),
		"--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-include=/usr/share/doc/*/copyright",
		"--dpkgopt=path-exclude=/usr/share/man/*",
		"--dpkgopt=path-exclude=/usr/share/info/*",
		"--dpkgopt=path-exclude=/usr/share/locale/*",
		"--dpkgopt=path-include=/usr/share/locale/locale.alias",
		"--dpkgopt=path-exclude=/usr/share/lintian/*",
		base.Suite,
	}
}

// CacheKey identifies base's root file system: a hash of everything that decides its contents
// (suite, packages and their order, mmdebstrap's arguments, this package's filter).
func CacheKey(base Base) string {
	h := sha256.Sum256([]byte(rootfsRecipe + "\n" + strings.Join(mmdebstrapArgs(base), "\n")))
	return base.Suite + "-" + hex.EncodeToString(h[:8])
}

// CachedRootFS returns the path of base's cached root file system (a gzipped tar) in cacheDir and
// whether it is there.
func CachedRootFS(base Base, cacheDir string) (string, bool) {
	p := filepath.Join(cacheDir, CacheKey(base)+".tar.gz")
	st, err := os.Stat(p)
	return p, err == nil && st.Mode().IsRegular()
}

// dropped reports whether an entry of mmdebstrap's tar (name without "./") stays out of the image:
// device nodes (the runtime provides /dev), the build host's resolv.conf and hostname (the runtime
// provides them too), apt's package lists and caches (as the Dockerfile's `rm -rf
// /var/lib/apt/lists/*`) and logs.
func dropped(name string, typ byte) bool {
	switch {
	case name == "" || name == "etc/resolv.conf" || name == "etc/hostname":
		return true
	case strings.HasPrefix(name, "dev/") && name != "dev/":
		return true
	case strings.HasPrefix(name, "var/lib/apt/lists/") && name != "var/lib/apt/lists/":
		return true
	case strings.HasPrefix(name, "var/cache/apt/") && name != "var/cache/apt/":
		return true
	case strings.HasPrefix(name, "var/log/") && typ != tar.TypeDir:
		return true
	}
	return false
}

// filterRootFS copies mmdebstrap's tar from r to w as a gzipped layer: entries dropped as above,
// names without "./", fixed times, no user or group names (the IDs stay).
func filterRootFS(r io.Reader, w io.Writer) error {
	tr := tar.NewReader(r)
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading mmdebstrap's tar: %w", err)
		}
		hdr.Name = strings.TrimPrefix(hdr.Name, "./")
		if dropped(hdr.Name, hdr.Typeflag) {
			continue
		}
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = strings.TrimPrefix(hdr.Linkname, "./")
		}
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = Epoch, time.Time{}, time.Time{}
		hdr.Uname, hdr.Gname = "", ""
		for k := range hdr.PAXRecords {
			if k == "atime" || k == "ctime" || k == "mtime" {
				delete(hdr.PAXRecords, k)
			}
		}
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing root file system entry %s: %w", hdr.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("copying root file system entry %s: %w", hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing root file system: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("writing root file system: %w", err)
	}
	return nil
}

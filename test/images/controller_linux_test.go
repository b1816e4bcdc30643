package images

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
)

// buildController builds the controller image with the machine's root file system cache (shared
// with `make images`; 1.5–5 minutes when cold) and reads it back from its archive.
func buildController(t *testing.T) (v1.Image, string) {
	t.Helper()
	testutil.RequireRoot(t)
	cache, err := DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := CachedRootFS(Controller.Base, cache); !ok {
		t.Logf("building the %s root file system into %s (cold: 1.5–5 min)", Controller.Base.Suite, cache)
	}
	img, err := Image(context.Background(), Controller, binaries(t), cache)
	if err != nil {
		t.Fatal(err)
	}
	return reload(t, Tag("ghcr.io/redhat-cop", Controller, "test"), img)
}

// unpack extracts img's file system (layers flattened, as a runtime sees it) into a new directory.
func unpack(t *testing.T, img v1.Image) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("tar", "-x", "-C", dir, "--numeric-owner", "-p")
	cmd.Stdin = mutate.Extract(img)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar -x of the image's file system: %v\n%s", err, out)
	}
	return dir
}

// The controller image, built locally: the binary over a trixie root file system with iptables
// (nft and legacy) and nsenter, run as root; its programs run inside it.
func TestControllerImage(t *testing.T) {
	img, _ := buildController(t)
	cfg := configOf(t, img)
	if cfg.Config.User != "0:0" || !reflect.DeepEqual(cfg.Config.Entrypoint, Controller.Entrypoint) || !reflect.DeepEqual(cfg.Config.Cmd, []string{"run"}) {
		t.Errorf("config user %q entrypoint %q cmd %q", cfg.Config.User, cfg.Config.Entrypoint, cfg.Config.Cmd)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 2 {
		t.Fatalf("layers: %d, %v; want the root file system and the binary", len(layers), err)
	}
	var total int64
	for _, l := range layers {
		s, _ := l.Size()
		total += s
	}
	t.Logf("controller image: %d MB compressed", total>>20)

	root := unpack(t, img)
	want, err := os.ReadFile(filepath.Join(binaries(t), "istio-pod-network-controller"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(root, "usr/local/bin/istio-pod-network-controller")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("/usr/local/bin/istio-pod-network-controller: %v, same bytes as make build's: %v", err, bytes.Equal(got, want))
	}
	for _, p := range []string{"usr/sbin/iptables-nft-restore", "usr/sbin/iptables-legacy-restore", "usr/sbin/ip6tables-nft-restore",
		"usr/sbin/ip6tables-legacy-restore", "usr/sbin/iptables-nft-save", "usr/bin/nsenter"} {
		if st, err := os.Stat(filepath.Join(root, p)); err != nil || st.Mode()&0o111 == 0 {
			t.Errorf("/%s: %v, want an executable", p, err)
		}
	}
	// What the image leaves out: apt's lists, device nodes, the build host's DNS and name, manuals.
	for _, p := range []string{"var/lib/apt/lists", "dev", "usr/share/man", "var/cache/apt"} {
		if ents, _ := os.ReadDir(filepath.Join(root, p)); len(ents) > 0 {
			t.Errorf("/%s holds %d entries (%s...), want none", p, len(ents), ents[0].Name())
		}
	}
	for _, p := range []string{"etc/resolv.conf", "etc/hostname"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("/%s is in the image: the build host's", p)
		}
	}

	pod := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: app\n  - name: istio-proxy\n    image: proxyv2\nstatus:\n  podIPs:\n  - ip: 10.1.2.3\n"
	if err := os.WriteFile(filepath.Join(root, "tmp", "pod.yaml"), []byte(pod), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{append(append([]string{}, cfg.Config.Entrypoint...), "render", "-f", "/tmp/pod.yaml"), "* nat\n"},
		{[]string{"iptables-nft-save", "--version"}, "(nf_tables)"},
		{[]string{"iptables-legacy-save", "--version"}, "(legacy)"},
		{[]string{"ip6tables-nft-restore", "--version"}, "(nf_tables)"},
		{[]string{"nsenter", "--version"}, "util-linux"},
	} {
		cmd := exec.Command("chroot", append([]string{root}, c.args...)...)
		cmd.Env = cfg.Config.Env
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), c.want) {
			t.Errorf("chroot IMAGE %s: %v\n%s\nwant output with %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}
}

package images

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The wait image, built locally: one layer holding the static binary at the described path, run as
// 1337:1337, read back from its archive under its tag.
func TestWaitImage(t *testing.T) {
	bin := binaries(t)
	img, err := Image(context.Background(), Wait, bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tag := Tag("ghcr.io/redhat-cop", Wait, "test")
	back, _ := reload(t, tag, img)
	cfg := configOf(t, back)
	if cfg.Config.User != "1337:1337" || !reflect.DeepEqual(cfg.Config.Entrypoint, []string{"/istio-pod-network-wait"}) || len(cfg.Config.Cmd) != 0 {
		t.Errorf("config user %q entrypoint %q cmd %q, want 1337:1337 [/istio-pod-network-wait] []", cfg.Config.User, cfg.Config.Entrypoint, cfg.Config.Cmd)
	}
	if !reflect.DeepEqual(cfg.Config.Env, []string{"PATH=" + Path}) || cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("config env %q os %q arch %q", cfg.Config.Env, cfg.OS, cfg.Architecture)
	}
	layers, err := back.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v; want 1", len(layers), err)
	}
	want, err := os.ReadFile(filepath.Join(bin, "istio-pod-network-wait"))
	if err != nil {
		t.Fatal(err)
	}
	files := layerFiles(t, layers[0], 64<<20)
	if len(files) != 1 {
		t.Errorf("layer holds %d entries, want the binary alone", len(files))
	}
	e, ok := files["istio-pod-network-wait"]
	if !ok || e.hdr.Mode != 0o755 || e.hdr.Uid != 0 || e.hdr.Gid != 0 || !bytes.Equal(e.data, want) {
		t.Fatalf("layer entry istio-pod-network-wait: present %v, header %+v, same bytes as make build's %v", ok, e.hdr, bytes.Equal(e.data, want))
	}
	size, _ := layers[0].Size()
	t.Logf("%s: one layer of %d bytes compressed", tag, size)

	// Same inputs, same digest: fixed times, sorted entries.
	again, err := Image(context.Background(), Wait, bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("two builds of the same binary: digests %s and %s", d1, d2)
	}
}

// Static makes the small test images (a pause image, a stand-in proxy); one archive may hold several.
func TestStatic(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(a, []byte("pause"), 0o644)
	os.WriteFile(b, []byte("proxy"), 0o600)
	pause, err := Static(map[string]string{"/pause": a}, []string{"/pause"}, "65535:65535")
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := Static(map[string]string{"/usr/local/bin/proxy": b, "/usr/local/bin/pause": a}, []string{"/usr/local/bin/proxy", "-v"}, "1337:1337")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "out", "test.tar")
	if err := WriteArchive(path, map[string]v1.Image{"localhost/pause:test": pause, "localhost/proxy:test": proxy}); err != nil {
		t.Fatal(err)
	}
	back, _ := reload(t, "localhost/proxy:test", proxy)
	layers, _ := back.Layers()
	files := layerFiles(t, layers[0], 1<<10)
	var names []string
	for n := range files {
		names = append(names, n)
	}
	wantNames := []string{"usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/pause", "usr/local/bin/proxy"}
	if len(names) != len(wantNames) || string(files["usr/local/bin/proxy"].data) != "proxy" || files["usr/local/bin/proxy"].hdr.Mode != 0o755 {
		t.Errorf("proxy layer entries %q, want %q with the file's bytes, mode 0755", names, wantNames)
	}
	if cfg := configOf(t, back); cfg.Config.User != "1337:1337" || !reflect.DeepEqual(cfg.Config.Entrypoint, []string{"/usr/local/bin/proxy", "-v"}) {
		t.Errorf("proxy config %+v", cfg.Config)
	}

	for name, c := range map[string]struct {
		files map[string]string
		entry []string
		user  string
		want  string
	}{
		"user name":     {map[string]string{"/pause": a}, []string{"/pause"}, "nobody", `user "nobody"`},
		"relative path": {map[string]string{"pause": a}, []string{"/pause"}, "0:0", `path "pause"`},
		"missing file":  {map[string]string{"/pause": filepath.Join(dir, "nope")}, []string{"/pause"}, "0:0", "nope"},
		"directory":     {map[string]string{"/pause": dir}, []string{"/pause"}, "0:0", "not a regular file"},
		"no files":      {nil, []string{"/pause"}, "0:0", "files: none"},
		"no entrypoint": {map[string]string{"/pause": a}, nil, "0:0", "entrypoint: empty"},
	} {
		if _, err := Static(c.files, c.entry, c.user); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Static() = %v, want an error with %q", name, err, c.want)
		}
	}
	if err := WriteArchive(filepath.Join(dir, "x.tar"), map[string]v1.Image{"localhost/pause": pause}); err == nil || !strings.Contains(err.Error(), `tag "localhost/pause"`) {
		t.Errorf("WriteArchive without a tag's version: %v, want an error naming the tag", err)
	}
}

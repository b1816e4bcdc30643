package images

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Istio's images keep Istio's names, users and entrypoints (the istiod chart and the injector name
// them <hub>/pilot and <hub>/proxyv2); they are not stages of the project's Dockerfile; the proxy
// stand-in shares the controller's root file system cache.
func TestIstioSpecs(t *testing.T) {
	for _, s := range Istio() {
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", s.Target, err)
		}
		for _, p := range All() {
			if p.Target == s.Target || p.Name == s.Name {
				t.Errorf("Istio's image %s clashes with the project's %s", s.Name, p.Name)
			}
		}
	}
	if Istiod.Name != "pilot" || ProxyStandin.Name != "proxyv2" {
		t.Errorf("names %q and %q, want Istio's pilot and proxyv2", Istiod.Name, ProxyStandin.Name)
	}
	if CacheKey(ProxyStandin.Base) != CacheKey(Controller.Base) {
		t.Errorf("the proxy stand-in's base %v is not the controller's %v: a second root file system build", ProxyStandin.Base, Controller.Base)
	}
	df, err := Dockerfile(All())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(df, []byte("pilot-discovery")) || bytes.Contains(df, []byte("AS istiod")) {
		t.Errorf("the project's Dockerfile has a stage for Istio's image")
	}
}

// The istiod image from a stand-in pilot-discovery file: one layer holding it at Istio's path,
// run as 1337:1337 with Istio's entrypoint, under the hub/pilot:tag tag the istiod chart makes.
func TestIstiodImage(t *testing.T) {
	bin := t.TempDir()
	content := []byte("#!/bin/false\npilot-discovery stand-in for the image test\n")
	if err := os.WriteFile(filepath.Join(bin, "pilot-discovery"), content, 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := Image(context.Background(), Istiod, bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tag := Tag("localhost/istio", Istiod, "e2e")
	if tag != "localhost/istio/pilot:e2e" {
		t.Errorf("tag %q, want localhost/istio/pilot:e2e (the istiod chart's <hub>/pilot:<tag>)", tag)
	}
	back, _ := reload(t, tag, img)
	cfg := configOf(t, back)
	if cfg.Config.User != "1337:1337" || !reflect.DeepEqual(cfg.Config.Entrypoint, []string{"/usr/local/bin/pilot-discovery"}) {
		t.Errorf("config user %q entrypoint %q, want 1337:1337 [/usr/local/bin/pilot-discovery]", cfg.Config.User, cfg.Config.Entrypoint)
	}
	layers, err := back.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v; want 1", len(layers), err)
	}
	files := layerFiles(t, layers[0], 1<<20)
	e, ok := files["usr/local/bin/pilot-discovery"]
	if !ok || e.hdr.Mode != 0o755 || !bytes.Equal(e.data, content) {
		var names []string
		for n := range files {
			names = append(names, n)
		}
		t.Errorf("layer entries %s: want usr/local/bin/pilot-discovery, mode 0755, the file's bytes", strings.Join(names, ", "))
	}
}

package realnode

// Istio's control plane on the real node: istiod (pilot-discovery, built from the Go module proxy)
// and a stand-in proxyv2 image, installed with Istio's own base and istiod charts from the
// istio.io/istio module that test/injection pins.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
	"github.com/redhat-cop/istio-pod-network-controller/test/images"
)

// IstioHub and IstioTag are global.hub and global.tag of Istio's charts on the real node. Istio's
// source charts carry placeholders there; the images keep Istio's names under that hub:
// <hub>/pilot:<tag> (istiod) and <hub>/proxyv2:<tag> (the stand-in proxy), so pilot.image and
// global.proxy.image keep their defaults.
const (
	IstioHub = "localhost/istio"
	IstioTag = "e2e"
)

// BuildIstioImages builds test/images.Istio() into dir as docker-archives (dir/pilot.tar,
// dir/proxyv2.tar) for Options.Images: pilot-discovery and pilot-agent from test/tools/build.sh
// (built on first use: several minutes each on 2 cores), the stand-in from test/realnode/standin,
// the proxy's Debian root file system from the controller image's cache.
func BuildIstioImages(ctx context.Context, dir string, log io.Writer) ([]string, error) {
	tools, err := cluster.BuildTools(ctx, log, "pilot-discovery", "pilot-agent")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "istio-bin")
	if err := harness.GoBuild(ctx, bin, "./test/realnode/standin"); err != nil {
		return nil, err
	}
	for _, b := range []string{"pilot-discovery", "pilot-agent"} {
		if err := os.Symlink(filepath.Join(tools, b), filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("Istio's images: %w", err)
		}
	}
	cache, err := images.DefaultCacheDir()
	if err != nil {
		return nil, err
	}
	return images.Build(ctx, images.Options{
		Specs: images.Istio(), BinDir: bin, OutDir: dir, Repo: IstioHub, Version: IstioTag, CacheDir: cache, Progress: log,
	})
}

// IstioCharts is where Istio's charts are in the istio.io/istio module that test/injection
// requires (its manifests/charts directory, in the Go module cache: downloaded if missing).
type IstioCharts struct {
	// Version is the module version, Dir the manifests/charts directory.
	Version, Dir string
}

// Base and Istiod are the charts Istio's Helm repository publishes as istio/base and istio/istiod.
func (c IstioCharts) Base() string   { return filepath.Join(c.Dir, "base") }
func (c IstioCharts) Istiod() string { return filepath.Join(c.Dir, "istio-control", "istio-discovery") }

// FindIstioCharts runs `go mod download -json istio.io/istio` in test/injection and checks that
// the module holds both charts.
func FindIstioCharts(ctx context.Context) (IstioCharts, error) {
	root, err := harness.ModuleRoot(ctx)
	if err != nil {
		return IstioCharts{}, err
	}
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "istio.io/istio")
	cmd.Dir = filepath.Join(root, "test", "injection")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return IstioCharts{}, fmt.Errorf("go mod download istio.io/istio in test/injection: %w: %s", err, stderr.String())
	}
	var m struct{ Version, Dir string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		return IstioCharts{}, fmt.Errorf("go mod download istio.io/istio: no module directory in %q (%v)", out, err)
	}
	c := IstioCharts{Version: m.Version, Dir: filepath.Join(m.Dir, "manifests", "charts")}
	for _, chart := range []string{c.Base(), c.Istiod()} {
		if _, err := os.Stat(filepath.Join(chart, "Chart.yaml")); err != nil {
			return IstioCharts{}, fmt.Errorf("istio.io/istio %s: no chart in %s: %w", m.Version, chart, err)
		}
	}
	return c, nil
}

// IstiodOverrides are the istiod chart values this cluster needs on top of the ones our chart
// prints (docs/install.md lists them): the local images' hub and tag, and the API server's
// address, since there is no kube-proxy to route the kubernetes Service.
func (n *Node) IstiodOverrides() []string {
	return []string{
		"global.hub=" + IstioHub, "global.tag=" + IstioTag,
		"env.KUBERNETES_SERVICE_HOST=" + n.APIServerHost, "env.KUBERNETES_SERVICE_PORT=" + n.APIServerPort,
	}
}

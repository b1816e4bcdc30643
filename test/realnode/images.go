package realnode

import (
	"context"
	"fmt"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
	"github.com/redhat-cop/istio-pod-network-controller/test/images"
)

// StandinImage holds the stand-in binary (test/realnode/standin): `standin proxy` for istio-proxy,
// `standin app` for an application container. Start imports it with PauseImage.
const StandinImage = "localhost/istio-pod-network-controller/standin:e2e"

// writeTestImages builds the stand-in binary and writes the pause and stand-in images (single
// layer, FROM scratch) as one docker-archive in dir, returning its path.
func writeTestImages(ctx context.Context, dir string) (string, error) {
	if err := harness.GoBuild(ctx, dir, "./test/realnode/standin"); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "standin")
	files := map[string]string{"/standin": bin}
	pause, err := images.Static(files, []string{"/standin", "pause"}, "65535:65535")
	if err != nil {
		return "", fmt.Errorf("pause image: %w", err)
	}
	standin, err := images.Static(files, []string{"/standin"}, "65532:65532")
	if err != nil {
		return "", fmt.Errorf("stand-in image: %w", err)
	}
	archive := filepath.Join(dir, "test-images.tar")
	if err := images.WriteArchive(archive, map[string]v1.Image{PauseImage: pause, StandinImage: standin}); err != nil {
		return "", err
	}
	return archive, nil
}

//go:build !linux

package images

import (
	"context"
	"fmt"
)

// RootFS builds Debian root file systems with mmdebstrap, which runs on Linux only.
func RootFS(ctx context.Context, base Base, cacheDir string) (string, error) {
	return "", fmt.Errorf("building the %s root file system: mmdebstrap needs Linux", base.Suite)
}

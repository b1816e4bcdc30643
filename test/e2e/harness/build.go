// Package harness puts the project's real parts together on the local control plane, for the
// end-to-end scenarios, their benchmarks and `make demo`: it builds the controller and wait
// binaries, renders the Helm chart with the real helm and applies it (server-side), runs the
// controller binary in the host network namespace with a token bound to a controller Pod object
// on the node (so the chart's RBAC and admission policy apply to it exactly), and makes mesh pods
// shaped as the injection template makes them.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Module is this Go module's path.
const Module = "github.com/redhat-cop/istio-pod-network-controller"

// Binaries are the project's binaries, built for this machine.
type Binaries struct {
	// Controller is istio-pod-network-controller.
	Controller string
	// Wait is istio-pod-network-wait, static (it runs chrooted in the simulated wait container).
	Wait string
}

// ModuleRoot returns the directory of this module's go.mod, found with `go env GOMOD` from the
// working directory (any directory inside the module).
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside a Go module: run from the istio-pod-network-controller checkout")
	}
	data, err := os.ReadFile(gomod)
	if err != nil {
		return "", err
	}
	if !bytes.HasPrefix(data, []byte("module "+Module+"\n")) {
		return "", fmt.Errorf("%s is not the go.mod of %s: run from the istio-pod-network-controller checkout", gomod, Module)
	}
	return filepath.Dir(gomod), nil
}

// Build builds the controller and wait binaries into dir (CGO_ENABLED=0, as the images do) with
// one `go build` and returns their paths. The Go build cache makes repeated builds fast.
func Build(ctx context.Context, dir string) (Binaries, error) {
	if err := GoBuild(ctx, dir, "./cmd/istio-pod-network-controller", "./cmd/istio-pod-network-wait"); err != nil {
		return Binaries{}, err
	}
	return Binaries{
		Controller: filepath.Join(dir, "istio-pod-network-controller"),
		Wait:       filepath.Join(dir, "istio-pod-network-wait"),
	}, nil
}

// GoBuild builds this module's main packages (paths relative to the module root, such as
// "./cmd/istio-pod-network-wait") as static binaries (CGO_ENABLED=0) into dir.
func GoBuild(ctx context.Context, dir string, pkgs ...string) error {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	args := append([]string{"build", "-trimpath", "-o", dir + string(os.PathSeparator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

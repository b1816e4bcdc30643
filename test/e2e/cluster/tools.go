package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// BuildTools runs test/tools/build.sh for the named tools ("kube-apiserver", "etcd", "helm"; none
// means all) and returns the directory that holds them. Cached binaries are reused at once; a cold
// kube-apiserver build takes about 10 minutes on 2 cores. build.sh's progress goes to log. Callers
// in several test binaries take turns (a file lock), so a tool is never built twice at once.
func BuildTools(ctx context.Context, log io.Writer, tools ...string) (string, error) {
	script, err := buildScript()
	if err != nil {
		return "", err
	}
	if log == nil {
		log = io.Discard
	}
	unlock, err := lockFile(ctx, filepath.Join(os.TempDir(), "istio-pod-network-controller-tools.lock"))
	if err != nil {
		return "", fmt.Errorf("wait for another build of the tools: %w", err)
	}
	defer unlock()
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, script, tools...)
	cmd.Stdout, cmd.Stderr = &stdout, log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w", script, strings.Join(tools, " "), err)
	}
	dir := strings.TrimSpace(stdout.String())
	if dir == "" {
		return "", fmt.Errorf("%s printed no tools directory", script)
	}
	return dir, nil
}

// buildScript finds test/tools/build.sh: next to this source file, or above the working directory.
func buildScript() (string, error) {
	var candidates []string
	if _, file, _, ok := runtime.Caller(0); ok {
		candidates = append(candidates, filepath.Join(filepath.Dir(file), "..", "..", "tools", "build.sh"))
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			candidates = append(candidates, filepath.Join(dir, "test", "tools", "build.sh"))
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return filepath.Clean(c), nil
		}
	}
	return "", errors.New("cannot find test/tools/build.sh (next to the cluster package's source, or above the working directory): set Options.ToolsDir")
}

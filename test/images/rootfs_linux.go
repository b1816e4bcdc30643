package images

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// rootfsTimeout bounds one mmdebstrap run (1.5 min on an idle 2-core machine, 5 under heavy load).
const rootfsTimeout = 20 * time.Minute

// RootFS returns the path of base's root file system as a gzipped tar, building it with mmdebstrap
// (installed with apt-get when missing and running as root) the first time and caching it in
// cacheDir under CacheKey(base). mmdebstrap's output goes to a log file next to it; a failure
// quotes the log's tail. Concurrent callers (make images and the tests) wait on a lock and share
// one build.
func RootFS(ctx context.Context, base Base, cacheDir string) (string, error) {
	if base.Scratch() {
		return "", fmt.Errorf("root file system: scratch has none")
	}
	if err := base.Validate(); err != nil {
		return "", fmt.Errorf("root file system: %w", err)
	}
	final, ok := CachedRootFS(base, cacheDir)
	if ok {
		return final, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("root file system cache: %w", err)
	}
	unlock, err := lockFile(filepath.Join(cacheDir, CacheKey(base)+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, ok := CachedRootFS(base, cacheDir); ok { // built while we waited
		return final, nil
	}
	logPath := filepath.Join(cacheDir, CacheKey(base)+".log")
	if err := ensureMmdebstrap(ctx, logPath); err != nil {
		return "", err
	}
	raw := filepath.Join(cacheDir, CacheKey(base)+".mmdebstrap.tar")
	defer os.Remove(raw)
	ctx, cancel := context.WithTimeout(ctx, rootfsTimeout)
	defer cancel()
	if err := runLogged(ctx, logPath, "mmdebstrap", append(mmdebstrapArgs(base), raw)...); err != nil {
		return "", fmt.Errorf("building the %s root file system with mmdebstrap: %w", base.Suite, err)
	}
	if err := filterFile(raw, final); err != nil {
		return "", err
	}
	return final, nil
}

// filterFile filters mmdebstrap's tar at raw into the gzipped layer at final, atomically.
func filterFile(raw, final string) error {
	in, err := os.Open(raw)
	if err != nil {
		return fmt.Errorf("root file system: %w", err)
	}
	defer in.Close()
	out, err := os.CreateTemp(filepath.Dir(final), "."+filepath.Base(final)+".*")
	if err != nil {
		return fmt.Errorf("root file system: %w", err)
	}
	defer os.Remove(out.Name())
	if err := filterRootFS(in, out); err != nil {
		out.Close()
		return fmt.Errorf("root file system %s: %w", raw, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("root file system: %w", err)
	}
	if err := os.Chmod(out.Name(), 0o644); err != nil {
		return fmt.Errorf("root file system: %w", err)
	}
	return os.Rename(out.Name(), final)
}

// ensureMmdebstrap installs Debian's mmdebstrap when it is missing and we are root.
func ensureMmdebstrap(ctx context.Context, logPath string) error {
	if _, err := exec.LookPath("mmdebstrap"); err == nil {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("mmdebstrap not found: run `apt-get install mmdebstrap` as root (it builds the controller image's Debian root file system)")
	}
	install := []string{"install", "-y", "-q", "--no-install-recommends", "mmdebstrap"}
	if runLogged(ctx, logPath, "apt-get", install...) == nil {
		return nil
	}
	if err := runLogged(ctx, logPath, "apt-get", "update", "-q"); err != nil {
		return fmt.Errorf("installing mmdebstrap: %w", err)
	}
	if err := runLogged(ctx, logPath, "apt-get", install...); err != nil {
		return fmt.Errorf("installing mmdebstrap: %w", err)
	}
	return nil
}

// runLogged runs name with args (never through a shell), appending its output to logPath; its error
// carries the log's last lines.
func runLogged(ctx context.Context, logPath, name string, args ...string) error {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	defer log.Close()
	fmt.Fprintf(log, "+ %s %s\n", name, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w; the end of %s:\n%s", name, err, logPath, tail(logPath, 20))
	}
	return nil
}

// tail returns the last n lines of the file at p.
func tail(p string, n int) string {
	data, err := os.ReadFile(p)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(string(bytes.TrimRight(data, "\n")), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lockFile takes an exclusive lock on p, waiting for other holders.
func lockFile(p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("root file system lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("root file system lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

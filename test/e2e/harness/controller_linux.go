package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
)

// ControllerOptions configure StartController.
type ControllerOptions struct {
	// Binary is the istio-pod-network-controller binary.
	Binary string
	// Kubeconfig holds the controller's credentials (Install.Kubeconfig).
	Kubeconfig string
	// NodeName is --node-name.
	NodeName string
	// NetnsDirs is --netns-dirs (where the simulated node registers namespaces).
	NetnsDirs string
	// LockDir is --lock-dir.
	LockDir string
	// DriftPeriod is --drift-period; 0 keeps the default.
	DriftPeriod time.Duration
	// Args are more flags (-v=2, --discovery=...).
	Args []string
	// LogPath receives the controller's output (appended across restarts).
	LogPath string
}

// Controller is the controller binary running in the host network namespace (`run`).
type Controller struct {
	opts        ControllerOptions
	MetricsAddr string // host:port of /metrics
	HealthAddr  string // host:port of /healthz and /readyz

	mu    sync.Mutex
	extra []string // flags appended from the next Start on (SetExtraArgs)
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
}

// StartController picks free loopback ports for metrics and health, starts the controller and
// waits until /readyz answers ok (or the process exits, or ctx ends).
func StartController(ctx context.Context, opts ControllerOptions) (*Controller, error) {
	ports, err := cluster.FreePorts(2)
	if err != nil {
		return nil, err
	}
	c := &Controller{opts: opts,
		MetricsAddr: "127.0.0.1:" + strconv.Itoa(ports[0]),
		HealthAddr:  "127.0.0.1:" + strconv.Itoa(ports[1])}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Args is the controller's command line.
func (c *Controller) Args() []string {
	args := []string{"run",
		"--node-name=" + c.opts.NodeName,
		"--kubeconfig=" + c.opts.Kubeconfig,
		"--metrics-bind-address=" + c.MetricsAddr,
		"--health-probe-bind-address=" + c.HealthAddr,
		"--metrics-secure=false", // Metrics reads plain HTTP; the secure endpoint is tested in test/chart
		"--lock-dir=" + c.opts.LockDir,
	}
	if c.opts.NetnsDirs != "" {
		args = append(args, "--netns-dirs="+c.opts.NetnsDirs)
	}
	if c.opts.DriftPeriod > 0 {
		args = append(args, "--drift-period="+c.opts.DriftPeriod.String())
	}
	return append(append(args, c.opts.Args...), c.extra...)
}

// SetExtraArgs sets flags appended to the command line from the next Start on (none: the flags
// StartController was given).
func (c *Controller) SetExtraArgs(args ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.extra = args
}

// Start starts the controller (again, after Kill or Stop) with the same flags and waits until it
// is ready.
func (c *Controller) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil && !c.exited() {
		return errors.New("controller: already running")
	}
	logf, err := os.OpenFile(c.opts.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== %s: starting %s %q\n", time.Now().Format(time.RFC3339Nano), c.opts.Binary, c.Args())
	cmd := exec.Command(c.opts.Binary, c.Args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "KUBECONFIG=", "NODE_NAME=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		// The parent-death signal follows the forking thread: keep it until the child exits.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer logf.Close()
		defer close(done)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start the controller: %w", err)
	}
	c.cmd, c.done = cmd, done
	c.mu.Unlock()
	err = c.waitReady(ctx)
	c.mu.Lock()
	if err != nil {
		return fmt.Errorf("controller not ready: %w%s", err, c.tail(30))
	}
	return nil
}

func (c *Controller) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *Controller) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		if last = c.get(ctx, "http://"+c.HealthAddr+"/readyz", io.Discard); last == nil {
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("it exited (%v)", c.err)
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Controller) get(ctx context.Context, url string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("%s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// PID is the running controller's process ID (0 when not running).
func (c *Controller) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.exited() {
		return 0
	}
	return c.cmd.Process.Pid
}

// Kill sends SIGKILL (a crash) and waits until the process is gone.
func (c *Controller) Kill() error { return c.signal(syscall.SIGKILL, 0) }

// Stop sends SIGTERM and waits up to grace for a clean exit (then SIGKILL); it returns the exit
// error of an unclean exit.
func (c *Controller) Stop(grace time.Duration) error { return c.signal(syscall.SIGTERM, grace) }

func (c *Controller) signal(sig syscall.Signal, grace time.Duration) error {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	if sig != syscall.SIGKILL {
		select {
		case <-done:
		case <-time.After(grace):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			return fmt.Errorf("controller did not exit within %s of %v", grace, sig)
		}
	}
	<-done
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // anything left in its group
	c.mu.Lock()
	defer c.mu.Unlock()
	if sig == syscall.SIGKILL {
		return nil
	}
	return c.err
}

// Memory returns the controller's resident set size and its peak (VmRSS, VmHWM) in bytes.
func (c *Controller) Memory() (rss, peak uint64, err error) {
	pid := c.PID()
	if pid == 0 {
		return 0, 0, errors.New("controller: not running")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status %s: %q", pid, key, val)
		}
		if key == "VmRSS" {
			rss = kb * 1024
		} else {
			peak = kb * 1024
		}
	}
	return rss, peak, sc.Err()
}

// Metrics returns the controller's /metrics text.
func (c *Controller) Metrics(ctx context.Context) (string, error) {
	var b strings.Builder
	err := c.get(ctx, "http://"+c.MetricsAddr+"/metrics", &b)
	return b.String(), err
}

// LogTail returns the last n lines of the controller's log, for failure reports.
func (c *Controller) LogTail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tail(n)
}

func (c *Controller) tail(n int) string {
	data, err := os.ReadFile(c.opts.LogPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("\n--- last %d lines of the controller log (%s) ---\n%s", len(lines), c.opts.LogPath, strings.Join(lines, "\n"))
}

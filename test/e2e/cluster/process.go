package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// process is one control-plane binary running in its own process group, logging to a file.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	waitErr error         // the exit status; valid once done is closed
}

// startProcess starts bin with args, appending its stdout and stderr to logPath.
//
// The child gets a parent-death signal (Linux), which the kernel sends when the *thread* that forked
// it exits. Go ends threads whose goroutine exits while locked to them (as namespace code does), so
// the child is forked from a goroutine that keeps its thread locked until the child has exited.
func startProcess(name, bin string, args []string, logPath string) (*process, error) {
	return startProcessEnv(name, bin, args, logPath, nil)
}

// startProcessEnv is startProcess with env as the child's environment (nil: this process's).
func startProcessEnv(name, bin string, args []string, logPath string, env []string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	fmt.Fprintf(logf, "=== %s: starting %s %q\n", time.Now().Format(time.RFC3339Nano), bin, args)
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	p := &process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer logf.Close()
		defer close(p.done)
		if err := cmd.Start(); err != nil {
			p.waitErr = err
			started <- err
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		// Right after the leader is reaped, kill what is left of its group (a group with members
		// keeps its ID; later, the ID may belong to someone else).
		signalGroup(cmd.Process, syscall.SIGKILL)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, SIGKILL after grace (at once when grace is 0), and waits
// until the process has exited (the rest of its group is killed then). It does nothing once the
// process has exited.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	if grace > 0 {
		signalGroup(p.cmd.Process, syscall.SIGTERM)
		select {
		case <-p.done:
			return
		case <-time.After(grace):
		}
	}
	signalGroup(p.cmd.Process, syscall.SIGKILL)
	<-p.done
}

// Process is a long-running binary started by StartProcess, with the control plane's guarantees:
// its own process group (Stop reaches its children) and the kernel kills it if the test process
// dies without stopping it. test/realnode runs containerd and the kubelet this way.
type Process struct{ p *process }

// StartProcess starts bin with args and env (nil: this process's environment), appending its
// output to logPath (each start marked with a "=== <time>: starting" line).
func StartProcess(name, bin string, args, env []string, logPath string) (*Process, error) {
	p, err := startProcessEnv(name, bin, args, logPath, env)
	if err != nil {
		return nil, err
	}
	return &Process{p}, nil
}

// Stop sends SIGTERM to the process group, SIGKILL after grace (at once when 0), and waits.
func (p *Process) Stop(grace time.Duration) { p.p.stop(grace) }

// Exited reports whether the process has exited; Err is its exit status then.
func (p *Process) Exited() bool { return p.p.exited() }

// Err is the process's exit status once Exited.
func (p *Process) Err() error {
	if !p.p.exited() {
		return nil
	}
	return p.p.waitErr
}

// Pid is the process ID.
func (p *Process) Pid() int { return p.p.cmd.Process.Pid }

// Pids are the process IDs of the running control-plane processes by name (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler), for resource figures.
func (c *Cluster) Pids() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for _, p := range append([]*process{c.etcd, c.apiserver}, c.components...) {
		if p != nil && !p.exited() {
			out[p.name] = p.cmd.Process.Pid
		}
	}
	return out
}

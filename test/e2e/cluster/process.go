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
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	fmt.Fprintf(logf, "=== %s: starting %s %q\n", time.Now().Format(time.RFC3339Nano), bin, args)
	cmd := exec.Command(bin, args...)
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

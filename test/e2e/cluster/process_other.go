//go:build !linux

package cluster

import (
	"context"
	"os"
	"syscall"
)

// sysProcAttr: elsewhere than Linux there is no parent-death signal; Stop must run.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// signalGroup signals p itself (no process groups here).
func signalGroup(p *os.Process, sig syscall.Signal) {
	if sig == syscall.SIGKILL {
		_ = p.Kill()
		return
	}
	_ = p.Signal(sig)
}

// lockFile does not lock here: concurrent first builds are only guarded on Linux.
func lockFile(context.Context, string) (func(), error) { return func() {}, nil }

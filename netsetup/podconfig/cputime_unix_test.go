//go:build unix

package podconfig

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time (user and system) the process has used: a benchmark's ns/op is wall
// time, which on a loaded machine measures the other processes as much as the code.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

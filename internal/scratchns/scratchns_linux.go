// Package scratchns runs a function inside a new, empty network namespace.
package scratchns

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Run runs fn on a fresh OS thread moved into a new, empty network namespace. The thread is never
// unlocked, so the Go runtime ends it when fn returns, and the namespace goes with it.
func Run[T any](fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			var zero T
			ch <- result{zero, fmt.Errorf("unshare network namespace: %w", err)}
			return
		}
		v, err := fn()
		ch <- result{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

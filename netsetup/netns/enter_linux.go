package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// home is the process's own network namespace, opened while the packages initialize, on the main
// thread, before any goroutine can have moved a thread elsewhere. Every thread the Go runtime may
// schedule an ordinary goroutine on is in it: a thread moved by enter is unlocked only once it is
// back, and one that cannot come back is ended.
var home, homeErr = openHome()

func openHome() (int, error) {
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return -1, fmt.Errorf("open this process's network namespace: %w", err)
	}
	fd, err := unix.Dup(int(f.Fd())) // keep the fd past f's finalizer
	f.Close()
	if err != nil {
		return -1, fmt.Errorf("open this process's network namespace: dup: %w", err)
	}
	unix.CloseOnExec(fd)
	return fd, nil
}

// enter runs fn with the calling work moved into the network namespace of fd, on a goroutine of its
// own whose OS thread is locked for the duration. The thread starts in home (see home) and
// returns to it with one setns each way: no /proc lookup of the current namespace per call, as
// ns.Do makes. If switching back fails, the thread stays locked and ends with its goroutine, so
// no other goroutine ever runs in the pod's namespace.
func enter(fd int, fn func() error) error {
	if homeErr != nil {
		return homeErr
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread() // still in home
			errc <- fmt.Errorf("enter network namespace: setns: %w", err)
			return
		}
		err := fn()
		if rerr := unix.Setns(home, unix.CLONE_NEWNET); rerr != nil {
			// Locked until the goroutine exits: the runtime then ends the thread.
			errc <- fmt.Errorf("leave network namespace: setns: %w (after: %v)", rerr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

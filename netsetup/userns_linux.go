package netsetup

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// runnerFor returns how to run iptables tools in the calling thread's network namespace. When that
// namespace belongs to another user namespace (a pod with hostUsers: false), owner matches
// (--uid-owner 1337) only mean the pod's UID 1337 when the tool runs inside that user namespace,
// which a multi-threaded Go process cannot join: the tool then runs through nsenter, a
// single-threaded helper that joins the pod's user namespace (passed as an open fd) first.
func (a *Applier) runnerFor() (runner, func(), error) {
	userns, err := namespaceOwner()
	if err != nil {
		return nil, nil, err
	}
	if userns == nil {
		return a.run, func() {}, nil
	}
	wrapped := func(ctx context.Context, env []string, stdin string, name string, args ...string) (string, error) {
		return execWithFiles(ctx, env, stdin, []*os.File{userns}, "nsenter", append([]string{"--user=/proc/self/fd/3", "--", name}, args...)...)
	}
	return wrapped, func() { userns.Close() }, nil
}

// namespaceOwner returns the user namespace owning the calling thread's network namespace when it
// is not the process's own, else nil.
func namespaceOwner() (*os.File, error) {
	netns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open own network namespace: %w", err)
	}
	defer netns.Close()
	fd, err := unix.IoctlRetInt(int(netns.Fd()), unix.NS_GET_USERNS)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTTY) {
		return nil, nil // owned by an ancestor of our user namespace, or an old kernel
	}
	if err != nil {
		return nil, fmt.Errorf("NS_GET_USERNS: %w", err)
	}
	owner := os.NewFile(uintptr(fd), "userns")
	var a, b unix.Stat_t
	if err := unix.Fstat(fd, &a); err != nil {
		owner.Close()
		return nil, err
	}
	if err := unix.Stat("/proc/self/ns/user", &b); err != nil {
		owner.Close()
		return nil, err
	}
	if a.Dev == b.Dev && a.Ino == b.Ino {
		owner.Close()
		return nil, nil
	}
	return owner, nil
}

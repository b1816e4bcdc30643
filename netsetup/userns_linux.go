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
func (a *Applier) runnerFor(key string) (t tools, done func(), err error) {
	userns, err := namespaceOwner()
	if err != nil {
		return tools{}, nil, err
	}
	if userns == nil {
		return tools{run: a.run, env: a.env(key)}, func() {}, nil
	}
	// In the pod's user namespace the tool runs as the pod's root, which cannot open our lock
	// file by path: it gets the open file instead, reachable through /proc/self/fd without
	// walking our directories, and readable by that UID.
	lock, err := os.OpenFile(a.LockFile(key), os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		err = lock.Chmod(0o666)
	}
	if err != nil {
		userns.Close()
		return tools{}, nil, fmt.Errorf("xtables lock file: %w", err)
	}
	wrapped := func(ctx context.Context, env []string, stdin string, name string, args ...string) (string, error) {
		args = append([]string{"--user=/proc/self/fd/3", "--", name}, args...)
		return execWithFiles(ctx, env, stdin, []*os.File{userns, lock}, "nsenter", args...)
	}
	env := append(os.Environ(), "XTABLES_LOCKFILE=/proc/self/fd/4")
	return tools{run: wrapped, env: env, userns: true}, func() { userns.Close(); lock.Close() }, nil
}

// tools runs iptables tools in one namespace.
type tools struct {
	run    runner
	env    []string
	userns bool // through nsenter into the pod's user namespace
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

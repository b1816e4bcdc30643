package contract

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// CurrentNetnsID returns the identity of the network namespace of the calling OS thread: its
// SO_NETNS_COOKIE, read unprivileged through getsockopt on a fresh socket, or, on kernels without
// it, the inode of /proc/thread-self/ns/net. Callers inside another namespace must hold the thread
// (runtime.LockOSThread, as ns.Do does).
func CurrentNetnsID() (NetnsID, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return NetnsID{}, fmt.Errorf("netns identity: socket: %w", err)
	}
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err == nil && cookie != 0 {
		return NetnsID{Kind: KindCookie, Value: cookie}, nil
	}
	var st unix.Stat_t
	if serr := unix.Stat("/proc/thread-self/ns/net", &st); serr != nil {
		return NetnsID{}, fmt.Errorf("netns identity: SO_NETNS_COOKIE: %v; stat /proc/thread-self/ns/net: %w", err, serr)
	}
	return NetnsID{Kind: KindInode, Value: st.Ino}, nil
}

// NetnsInode returns the inode of the network namespace held open by f (an nsfs file such as
// /proc/<pid>/ns/net or /run/netns/<name>) without entering it. Inodes are reused by the kernel:
// use them for display and for comparing namespaces that are both held open.
func NetnsInode(f *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	return st.Ino, nil
}

// Package procnet reads the calling thread's /proc/thread-self/net files without creating
// anything: the legacy iptables table lists, which exist only while the module is loaded.
package procnet

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// read reads /proc/thread-self/net/name (the calling thread's network namespace) into buf with
// three system calls: these are seq files, whose read returns less than asked only at its end.
// A file that does not exist (the legacy module is not loaded) is nil data and no error; any
// other failure, or a file longer than buf, is an error: a check built on it fails closed.
func read(name string, buf []byte) ([]byte, error) {
	path := "/proc/thread-self/net/" + name
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	n, err := unix.Read(fd, buf)
	for errors.Is(err, unix.EINTR) {
		n, err = unix.Read(fd, buf)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if n == len(buf) {
		return nil, fmt.Errorf("read %s: longer than %d bytes", path, len(buf)-1)
	}
	return buf[:n], nil
}

// TableNames are the files that list a namespace's legacy iptables tables, IPv4 and IPv6.
const (
	TableNames  = "ip_tables_names"
	Table6Names = "ip6_tables_names"
)

// LegacyTables lists the legacy iptables tables of the calling thread's namespace from file
// (TableNames or Table6Names), and when only is given keeps those named in it. There are a few
// (filter, nat, mangle, raw, security): 512 bytes hold them all.
func LegacyTables(file string, only ...string) ([]string, error) {
	var buf [512]byte
	data, err := read(file, buf[:])
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range strings.Fields(string(data)) {
		if len(only) == 0 || slices.Contains(only, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

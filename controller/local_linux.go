package controller

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

// cacheEvents: libcni writes a record in place (IN_CLOSE_WRITE) or, in other versions and
// runtimes, renames it there (IN_MOVED_TO); CNI DEL removes it.
const cacheEvents = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_DELETE | unix.IN_MOVED_FROM |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// localRetry is how often a missing (or unwatchable) results directory is tried again.
const localRetry = time.Second

// watchLocal watches the CNI result cache directory until ctx ends: it reads every record
// present, then each one written, and queues the record's pod. A directory that does not exist
// yet is tried again every second.
func (c *Controller) watchLocal(ctx context.Context) {
	logger := klog.LoggerWithName(klog.FromContext(ctx), "local")
	for ctx.Err() == nil {
		err := c.watchLocalOnce(ctx, logger)
		if ctx.Err() != nil {
			return
		}
		logger.V(2).Info("Watching the CNI result cache again", "dir", c.localDir, "after", localRetry, "reason", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(localRetry):
		}
	}
}

// watchLocalOnce watches until the directory goes, inotify fails or ctx ends.
func (c *Controller) watchLocalOnce(ctx context.Context, logger klog.Logger) error {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "inotify") // served by the runtime's poller; Close wakes Read
	defer f.Close()
	if _, err := unix.InotifyAddWatch(fd, c.localDir, cacheEvents); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	c.scanLocal(logger, false) // after the watch is in place: nothing written meanwhile is missed
	buf := make([]byte, 256*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := f.Read(buf)
		if err != nil {
			return err
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if ev.Len > 0 {
				name = cstr(buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)])
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
			switch {
			case ev.Mask&unix.IN_Q_OVERFLOW != 0:
				c.scanLocal(logger, true)
			case ev.Mask&(unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0:
				return errors.New("the results directory went away")
			case name == "":
			case ev.Mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
				c.local.remove(name)
			default:
				if uid, ok := c.readLocal(logger, name); ok {
					c.enqueueLocal(logger, uid)
				}
			}
		}
	}
}

// scanLocal reads every record of the directory (at most netns.MaxCNIRecordFiles), forgetting
// those gone; with enqueue, it queues their pods.
func (c *Controller) scanLocal(logger klog.Logger, enqueue bool) {
	entries, err := os.ReadDir(c.localDir)
	if err != nil {
		logger.Error(err, "Reading the CNI result cache")
		return
	}
	present := map[string]bool{}
	for i, e := range entries {
		if i >= netns.MaxCNIRecordFiles {
			break
		}
		present[e.Name()] = true
		if uid, ok := c.readLocal(logger, e.Name()); ok && enqueue {
			c.enqueueLocal(logger, uid)
		}
	}
	c.local.mu.Lock()
	for name := range c.local.byFile {
		if !present[name] {
			delete(c.local.byFile, name)
		}
	}
	c.local.mu.Unlock()
}

// readLocal reads one record with the cni-cache strategy's checks; anything else is ignored.
func (c *Controller) readLocal(logger klog.Logger, name string) (types.UID, bool) {
	path := filepath.Join(c.localDir, name)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return "", false
	}
	rec, err := netns.ReadCNIRecord(path)
	if err != nil {
		logger.V(4).Info("Ignoring a file of the CNI result cache", "file", path, "reason", err.Error())
		return "", false
	}
	if !c.local.put(name, rec, time.Unix(st.Mtim.Unix())) {
		logger.V(2).Info("CNI result cache over its limit: record ignored", "file", path, "limit", netns.MaxCNIRecordFiles)
		return "", false
	}
	return types.UID(rec.PodUID), true
}

func cstr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

package initwait

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dirEvents is every change of the directory's entries that can change what the annotations file
// reads: the kubelet's "..data" rename (IN_MOVED_TO), plain writes, and the directory itself going.
const dirEvents = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE |
	unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF |
	unix.IN_ONLYDIR

// inotifyInit1 is unix.InotifyInit1; tests replace it to simulate EMFILE.
var inotifyInit1 = unix.InotifyInit1

// watchDir starts watching dir with inotify and calls notify on every change. A directory that does
// not exist (yet, or any more) is retried every interval and notify is called once it is watched
// again. It returns an error only when inotify cannot be had at all; a later failure to re-add the
// watch degrades to calling notify every interval.
func watchDir(ctx context.Context, dir string, interval time.Duration, notify func(), log *slog.Logger) error {
	fd, err := inotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("inotify_init1: %w", err)
	}
	wd, err := unix.InotifyAddWatch(fd, dir, dirEvents)
	missing := errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
	if err != nil && !missing {
		unix.Close(fd)
		return fmt.Errorf("inotify_add_watch %s: %w", dir, err)
	}
	// A non-blocking fd handed to os.NewFile is served by the runtime's poller: Read parks the
	// goroutine and Close wakes it.
	f := os.NewFile(uintptr(fd), "inotify")
	w := &dirWatch{fd: fd, dir: dir, wd: -1, log: log}
	if missing {
		log.Info("annotations directory does not exist yet: will watch it once it does", "dir", dir)
	} else {
		w.wd = wd
	}
	events := make(chan []inotifyEvent)
	go readEvents(ctx, f, events)
	go w.run(ctx, f, events, interval, notify)
	return nil
}

// inotifyEvent is the part of a struct inotify_event the watch needs.
type inotifyEvent struct {
	wd   int32
	mask uint32
}

// readEvents reads batches of events from f until f is closed or ctx ends.
func readEvents(ctx context.Context, f *os.File, out chan<- []inotifyEvent) {
	defer close(out)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := f.Read(buf)
		if err != nil {
			return
		}
		var batch []inotifyEvent
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			batch = append(batch, inotifyEvent{wd: ev.Wd, mask: ev.Mask})
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
		select {
		case out <- batch:
		case <-ctx.Done():
			return
		}
	}
}

// dirWatch is the state of one directory watch; only its run goroutine touches it.
type dirWatch struct {
	fd      int
	dir     string
	wd      int // -1 while the directory is not watched
	polling bool
	log     *slog.Logger
}

func (w *dirWatch) run(ctx context.Context, f *os.File, events <-chan []inotifyEvent, interval time.Duration, notify func()) {
	defer f.Close()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		// The ticker matters only while the directory is missing or inotify has failed.
		var tick <-chan time.Time
		if w.wd < 0 || w.polling {
			tick = ticker.C
		}
		select {
		case <-ctx.Done():
			return
		case batch, ok := <-events:
			if !ok {
				w.log.Warn("inotify stopped: polling the annotations directory", "dir", w.dir, "interval", interval)
				w.polling = true
				events = nil
				continue
			}
			for _, ev := range batch {
				w.handle(ev)
			}
			if w.wd < 0 {
				w.rewatch()
			}
			notify()
		case <-tick:
			switch {
			case w.polling:
				notify()
			case w.wd < 0 && w.rewatch():
				notify()
			}
		}
	}
}

// handle notes when the watched directory goes away.
func (w *dirWatch) handle(ev inotifyEvent) {
	if int(ev.wd) != w.wd {
		return
	}
	switch {
	case ev.mask&unix.IN_IGNORED != 0:
		// The watch is gone: directory deleted, file system unmounted, or our own rm below.
		w.wd = -1
	case ev.mask&unix.IN_MOVE_SELF != 0:
		// The watch follows the directory to its new name; the path we read is elsewhere now.
		_, _ = unix.InotifyRmWatch(w.fd, uint32(w.wd)) // dropped either way: a failure means it is gone already
		w.wd = -1
	}
}

// rewatch tries to watch the directory again and reports whether it now is.
func (w *dirWatch) rewatch() bool {
	if w.polling {
		return false
	}
	wd, err := unix.InotifyAddWatch(w.fd, w.dir, dirEvents)
	switch {
	case err == nil:
		w.wd = wd
		return true
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		return false
	default:
		w.log.Warn("cannot watch the annotations directory again: polling it", "dir", w.dir, "err", err)
		w.polling = true
		return false
	}
}

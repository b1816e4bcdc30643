package initwait

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"
)

// watchFile reports, on the returned channel, that the annotations file at path may have changed.
// Notifications are coalesced (the channel holds at most one) and carry no content: the receiver
// re-reads the file. It watches the file's directory with inotify, which sees the kubelet's atomic
// swap of the "..data" symlink and survives the directory being deleted and re-created; when
// inotify cannot be had (forcePoll, or EMFILE/ENOSPC: every wait container on a node runs as the
// same host UID and shares its inotify limits) it polls every interval. It stops when ctx ends.
func watchFile(ctx context.Context, path string, forcePoll bool, interval time.Duration, log *slog.Logger) <-chan struct{} {
	ch := make(chan struct{}, 1)
	notify := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	dir := filepath.Dir(path)
	if forcePoll {
		log.Info("polling the annotations file (inotify disabled by option)", "file", path, "interval", interval)
	} else {
		err := watchDir(ctx, dir, interval, notify, log)
		if err == nil {
			return ch
		}
		log.Warn("inotify unavailable: polling the annotations file", "file", path, "interval", interval, "err", err)
	}
	go poll(ctx, interval, notify)
	return ch
}

// poll calls notify every interval until ctx ends.
func poll(ctx context.Context, interval time.Duration, notify func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			notify()
		}
	}
}

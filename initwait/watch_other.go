//go:build !linux

package initwait

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// watchDir is Linux-only (inotify); elsewhere the annotations file is polled.
func watchDir(context.Context, string, time.Duration, func(), *slog.Logger) error {
	return errors.New("inotify is Linux-only")
}

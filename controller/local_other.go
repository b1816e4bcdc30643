//go:build !linux

package controller

import "context"

// watchLocal needs inotify: without it, pods are found through the API server only.
func (c *Controller) watchLocal(ctx context.Context) { <-ctx.Done() }

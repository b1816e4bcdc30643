package initwait

import (
	"context"
	"log/slog"
)

// heldLog is a slog.Handler that keeps the records it is given until flush passes them, with
// their original times, to next.
type heldLog struct {
	next    slog.Handler
	records []slog.Record
}

func (h *heldLog) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *heldLog) Handle(_ context.Context, r slog.Record) error {
	h.records = append(h.records, r.Clone())
	return nil
}

// WithAttrs and WithGroup are not used by the waiter; they pass through unheld.
func (h *heldLog) WithAttrs(as []slog.Attr) slog.Handler { return h.next.WithAttrs(as) }
func (h *heldLog) WithGroup(name string) slog.Handler    { return h.next.WithGroup(name) }

// flush hands the held records to next, in order.
func (h *heldLog) flush(ctx context.Context) {
	for _, r := range h.records {
		_ = h.next.Handle(ctx, r)
	}
	h.records = nil
}

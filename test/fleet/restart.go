package fleet

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
)

// Second is one second of the restart's timeline, counted from the moment the API server was
// ready again (negative: before it was).
type Second struct {
	At         int     // seconds since ready
	Requests   int     // the fleet's requests (audit log)
	Rejected   int     // of them, refused (4xx: 403 before the authorizer's caches are filled, 429; 5xx)
	Relists    int     // LISTs and watches asking for the initial events
	Opened     int     // pod watches opened (200)
	PodWatches float64 // the API server's pod watch gauge at the end of the second; -1: not read
}

// RestartResult is what an API server restart did to the fleet.
type RestartResult struct {
	Outage      time.Duration   // the API server was stopped for this long before it started again
	Down        time.Duration   // from the stop to the API server being ready again
	Rewatch     []time.Duration // per controller, sorted: from ready to its pod watch open again
	AllWatching time.Duration   // from ready until the last controller watches again
	Requests    int             // the fleet's requests from the stop to the end of the timeline
	Rejected    int
	Relists     int
	PeakRPS     int // the busiest second
	Timeline    []Second
	APICPU      float64 // CPU seconds of the new API server process up to the end of the timeline
	APIRSS      float64 // MiB at the end
}

// RestartOptions configure Restart.
type RestartOptions struct {
	Outage  time.Duration // how long the API server stays stopped
	Tail    time.Duration // how long the timeline goes on after every controller watches again
	Timeout time.Duration // for every controller to watch again
}

// Restart stops the API server gracefully (it closes every watch), keeps it stopped for Outage,
// starts it again and follows the fleet's requests in the audit log until every controller of f has
// opened a pod watch again, and Tail longer.
func Restart(ctx context.Context, c *cluster.Cluster, f *Fleet, audit *AuditLog, opts RestartOptions) (RestartResult, error) {
	var res RestartResult
	if _, err := audit.Next(); err != nil { // skip what came before
		return res, err
	}
	stop := time.Now()
	if err := c.StopAPIServer(); err != nil {
		return res, err
	}
	time.Sleep(opts.Outage - time.Since(stop))
	res.Outage = time.Since(stop)
	if err := c.StartAPIServer(ctx); err != nil {
		return res, err
	}
	ready := time.Now()
	res.Down = ready.Sub(stop)
	pid := c.Pids()["kube-apiserver"]

	nodes := map[string]bool{}
	for _, ctrl := range f.Controllers {
		nodes[ctrl.Node] = true
	}
	w := newWatches(nodes, stop)
	var events []AuditEvent
	gauge := map[int]float64{}
	deadline := ready.Add(opts.Timeout)
	var allAt time.Time
	for tick := time.NewTicker(500 * time.Millisecond); ; <-tick.C {
		evs, err := audit.Next()
		if err != nil {
			tick.Stop()
			return res, err
		}
		for _, ev := range evs {
			w.add(ev)
		}
		events = append(events, evs...)
		if m, err := Scrape(ctx, c); err == nil {
			gauge[secondOf(time.Now(), ready)] = PodWatches(m)
		}
		now := time.Now()
		w.check(now)
		if allAt.IsZero() && len(w.held) == len(nodes) {
			allAt = now
		}
		if !allAt.IsZero() && now.Sub(allAt) >= opts.Tail {
			tick.Stop()
			break
		}
		if now.After(deadline) {
			tick.Stop()
			return res, fmt.Errorf("after %s, %d of %d controllers watch pods again", opts.Timeout, len(w.held), len(nodes))
		}
	}
	for _, t := range w.held {
		d := t.Sub(ready)
		res.Rewatch = append(res.Rewatch, d)
		res.AllWatching = max(res.AllWatching, d)
	}
	slices.Sort(res.Rewatch)
	res.timeline(events, stop, ready, gauge)
	st, err := ReadProc(pid)
	if err != nil {
		return res, fmt.Errorf("kube-apiserver: %w", err)
	}
	res.APICPU, res.APIRSS = st.CPU.Seconds(), mib(st.RSS)
	return res, nil
}

// watchHold is how long a pod watch must stay open to count as re-established: after the restart
// the API server opens a watch from the controller's last resource version and closes it at once
// when its new watch cache cannot serve that version (410 Gone), and the controller lists again.
const watchHold = 3 * time.Second

// watches follows each controller's pod watches after the stop through the audit log.
type watches struct {
	nodes map[string]bool
	stop  time.Time
	open  map[string]map[string]time.Time // node, audit ID: opened at
	held  map[string]time.Time            // node: opened at, of its first watch open watchHold long
}

func newWatches(nodes map[string]bool, stop time.Time) *watches {
	return &watches{nodes: nodes, stop: stop, open: map[string]map[string]time.Time{}, held: map[string]time.Time{}}
}

func (w *watches) add(ev AuditEvent) {
	n := ev.Node()
	if !w.nodes[n] || ev.StageTimestamp.Before(w.stop) || ev.Verb != "watch" || ev.ObjectRef.Resource != "pods" {
		return
	}
	switch {
	case ev.WatchOpened():
		if w.open[n] == nil {
			w.open[n] = map[string]time.Time{}
		}
		w.open[n][ev.AuditID] = ev.StageTimestamp
	case ev.Stage == "ResponseComplete":
		if t, ok := w.open[n][ev.AuditID]; ok && ev.StageTimestamp.Sub(t) >= watchHold {
			w.hold(n, t)
		}
		delete(w.open[n], ev.AuditID)
	}
}

// check marks the watches open watchHold long at now.
func (w *watches) check(now time.Time) {
	for n, ids := range w.open {
		for _, t := range ids {
			if now.Sub(t) >= watchHold {
				w.hold(n, t)
			}
		}
	}
}

func (w *watches) hold(n string, t time.Time) {
	if h, ok := w.held[n]; !ok || t.Before(h) {
		w.held[n] = t
	}
}

// secondOf is the second of t counted from ready (floor).
func secondOf(t, ready time.Time) int {
	d := t.Sub(ready)
	s := int(d / time.Second)
	if d < 0 && d%time.Second != 0 {
		s--
	}
	return s
}

// timeline buckets the fleet's requests after stop by second since ready.
func (res *RestartResult) timeline(events []AuditEvent, stop, ready time.Time, gauge map[int]float64) {
	by := map[int]*Second{}
	get := func(s int) *Second {
		if by[s] == nil {
			by[s] = &Second{At: s, PodWatches: -1}
		}
		return by[s]
	}
	for _, ev := range events {
		if ev.Node() == "" || !ev.Counted() || ev.StageTimestamp.Before(stop) {
			continue
		}
		s := get(secondOf(ev.StageTimestamp, ready))
		s.Requests++
		res.Requests++
		if ev.ResponseStatus.Code >= 400 {
			s.Rejected++
			res.Rejected++
		}
		if ev.Relist() {
			s.Relists++
			res.Relists++
		}
		if ev.WatchOpened() {
			s.Opened++
		}
	}
	for s, v := range gauge {
		get(s).PodWatches = v
	}
	for _, s := range by {
		res.Timeline = append(res.Timeline, *s)
		res.PeakRPS = max(res.PeakRPS, s.Requests)
	}
	slices.SortFunc(res.Timeline, func(a, b Second) int { return a.At - b.At })
}

package realnode

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// phase is one step of a pod's start, measured per pod; ok is false when a time is missing.
type phase struct {
	name string
	of   func(p podTimes) (time.Duration, bool)
}

func span(from, to time.Time) (time.Duration, bool) {
	return to.Sub(from), !from.IsZero() && !to.IsZero()
}

// phases are the steps reported for a variant whose interception container is wait ("" for none).
func phases(v variant) []phase {
	w := waitName(v)
	ps := []phase{
		{"pod created → sandbox network up (libcni's result record written)", func(p podTimes) (time.Duration, bool) { return span(p.created, p.network) }},
		{"sandbox network up → sandbox created (CRI)", func(p podTimes) (time.Duration, bool) { return span(p.network, p.sandbox) }},
		{"sandbox network up → pod IP in the API (the kubelet's status update, watch)", func(p podTimes) (time.Duration, bool) { return span(p.network, p.ipSeen) }},
	}
	if v == variantWait {
		ps = append(ps,
			phase{"sandbox network up → rules verified (the controller's read-back)", func(p podTimes) (time.Duration, bool) { return span(p.network, p.programmed.verified) }},
			phase{"sandbox created (CRI) → rules verified", func(p podTimes) (time.Duration, bool) { return span(p.sandbox, p.programmed.verified) }},
			phase{"  of which the reconcile's find (namespace found, proven, checked)", func(p podTimes) (time.Duration, bool) { return p.programmed.find, !p.programmed.verified.IsZero() }},
			phase{"  of which the reconcile's apply (rules applied, read back)", func(p podTimes) (time.Duration, bool) { return p.programmed.apply, !p.programmed.verified.IsZero() }},
			phase{"rules verified → ready annotation in the API (record, patch, watch)", func(p podTimes) (time.Duration, bool) { return span(p.programmed.verified, p.readySeen) }},
			phase{"ready in the API, or wait start if later → wait exit", func(p podTimes) (time.Duration, bool) {
				from := p.readySeen
				if p.started[w].After(from) {
					from = p.started[w]
				}
				return span(from, p.finished[w])
			}},
		)
	}
	if w != "" {
		ps = append(ps,
			phase{"sandbox created → " + w + " started (CRI)", func(p podTimes) (time.Duration, bool) { return span(p.sandbox, p.started[w]) }},
			phase{w + " run: started → exited (CRI)", func(p podTimes) (time.Duration, bool) { return span(p.started[w], p.finished[w]) }},
			phase{"  started (CRI) → its first log line read", func(p podTimes) (time.Duration, bool) { return span(p.started[w], p.logFirst[w]) }},
			phase{"  its first → last log line read", func(p podTimes) (time.Duration, bool) { return span(p.logFirst[w], p.logLast[w]) }},
			phase{"  its last log line read → exited (CRI)", func(p podTimes) (time.Duration, bool) { return span(p.logLast[w], p.finished[w]) }},
			phase{w + " exited → app started (container starts: migrate, app)", func(p podTimes) (time.Duration, bool) { return span(p.finished[w], p.started["app"]) }},
		)
	} else {
		ps = append(ps, phase{"sandbox created → app started (container starts: migrate, app)", func(p podTimes) (time.Duration, bool) { return span(p.sandbox, p.started["app"]) }})
	}
	return ps
}

// report logs the side-by-side table and the breakdowns, and reports p50/p99 per variant and run
// as benchmark metrics (seconds).
func (bn *benchNode) report(b *testing.B, variants []variant, serial, burst map[variant][]podTimes) {
	programmed := bn.programmedLines(b)
	for _, runs := range []map[variant][]podTimes{serial, burst} {
		for _, pts := range runs {
			for i := range pts {
				pts[i].programmed = programmed[pts[i].name]
			}
		}
	}
	var t strings.Builder
	fmt.Fprintf(&t, "pod created → app container started (CRI), real node:\n| variant | %d one at a time p50 / p90 / p99 | overhead over (a) p50 | %d at once p50 / p99 | overhead over (a) p50 |\n|---|---|---|---|---|\n",
		len(serial[variants[0]]), len(burst[variants[0]]))
	base := [2]time.Duration{percentile(totals(serial[variants[0]]), 50), percentile(totals(burst[variants[0]]), 50)}
	for _, v := range variants {
		s, u := totals(serial[v]), totals(burst[v])
		fmt.Fprintf(&t, "| %s | %s / %s / %s | %+.2f s | %s / %s | %+.2f s |\n", v,
			sec(percentile(s, 50)), sec(percentile(s, 90)), sec(percentile(s, 99)), (percentile(s, 50) - base[0]).Seconds(),
			sec(percentile(u, 50)), sec(percentile(u, 99)), (percentile(u, 50) - base[1]).Seconds())
		b.ReportMetric(percentile(s, 50).Seconds(), string(v)+"-serial-p50-s")
		b.ReportMetric(percentile(s, 99).Seconds(), string(v)+"-serial-p99-s")
		b.ReportMetric(percentile(u, 50).Seconds(), string(v)+"-burst-p50-s")
		b.ReportMetric(percentile(u, 99).Seconds(), string(v)+"-burst-p99-s")
	}
	for _, v := range variants {
		for _, run := range []struct {
			name string
			pts  []podTimes
		}{{"one at a time", serial[v]}, {"at once", burst[v]}} {
			fmt.Fprintf(&t, "\n%s, %s (%d pods): p50 / p90 / p99 (pods measured)\n", v, run.name, len(run.pts))
			for _, ph := range phases(v) {
				var ds []time.Duration
				for _, p := range run.pts {
					if d, ok := ph.of(p); ok {
						ds = append(ds, d)
					}
				}
				fmt.Fprintf(&t, "  %-80s %s / %s / %s (%d)\n", ph.name, ms(percentile(ds, 50)), ms(percentile(ds, 90)), ms(percentile(ds, 99)), len(ds))
				if v == variantWait && run.name == "one at a time" && strings.HasPrefix(ph.name, "sandbox network up → rules verified") {
					b.ReportMetric(percentile(ds, 99).Seconds()*1000, "c-network-to-verified-p99-ms")
				}
				if v == variantWait && run.name == "one at a time" && strings.HasPrefix(ph.name, harness.WaitContainer+" run") {
					b.ReportMetric(percentile(ds, 99).Seconds()*1000, "c-wait-run-p99-ms")
				}
			}
		}
	}
	b.Logf("\n%s", t.String())
}

func totals(pts []podTimes) []time.Duration {
	var out []time.Duration
	for _, p := range pts {
		if d, ok := span(p.created, p.started["app"]); ok {
			out = append(out, d)
		}
	}
	return out
}

func sec(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
func ms(d time.Duration) string  { return fmt.Sprintf("%d ms", d.Milliseconds()) }

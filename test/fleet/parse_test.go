package fleet

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP apiserver_request_total Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1"} 12
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 3
apiserver_request_total{code="429",component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1"} 2 1700000000000
apiserver_longrunning_requests{component="apiserver",group="",resource="pods",scope="cluster",subresource="",verb="WATCH",version="v1"} 7
apiserver_longrunning_requests{component="apiserver",group="",resource="pods",scope="resource",subresource="log",verb="WATCH",version="v1"} 1
odd{msg="a \"quoted\", comma\\ and\nnewline"} 1.5e3
`
	m, err := ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 6 {
		t.Fatalf("%d series, want 6", len(m))
	}
	got := RequestCounts(m)
	if got["LIST pods"] != 14 || got["PATCH pods/status"] != 3 || len(got) != 2 {
		t.Errorf("RequestCounts = %v, want LIST pods 14 and PATCH pods/status 3", got)
	}
	if w := PodWatches(m); w != 7 {
		t.Errorf("PodWatches = %g, want 7 (the log watch is a subresource)", w)
	}
	if m[5].Labels["msg"] != "a \"quoted\", comma\\ and\nnewline" || m[5].Value != 1500 {
		t.Errorf("escaped label: %+v", m[5])
	}
	for _, bad := range []string{`x{a="1"`, `x{a=1} 2`, `x{a="1"} two`, `x 1 2 3`, `x`} {
		if _, err := ParseMetrics(bad); err == nil {
			t.Errorf("ParseMetrics(%q): no error", bad)
		}
	}
}

func TestAuditLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	line := func(id, stage, verb, uri string, code int, node string) string {
		extra := ""
		if node != "" {
			extra = `,"extra":{"` + NodeNameExtra + `":["` + node + `"]}`
		}
		return `{"kind":"Event","auditID":"` + id + `","stage":"` + stage + `","verb":"` + verb + `","requestURI":"` + uri +
			`","user":{"username":"system:serviceaccount:istio-system:c"` + extra + `},"objectRef":{"resource":"pods","apiVersion":"v1"},` +
			`"responseStatus":{"code":` + strconv.Itoa(code) + `},"stageTimestamp":"2026-12-01T16:06:06.330000Z"}` + "\n"
	}
	first := line("1", "ResponseStarted", "watch", "/api/v1/pods?watch=true&sendInitialEvents=true", 200, "n1") +
		line("2", "ResponseComplete", "list", "/api/v1/pods", 403, "n2")
	if err := os.WriteFile(path, []byte(first+`{"kind":"Ev`), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &AuditLog{Path: path}
	evs, err := a.Next()
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2 (the partial line waits)", len(evs))
	}
	if !evs[0].WatchOpened() || !evs[0].Relist() || !evs[0].Counted() || evs[0].Node() != "n1" {
		t.Errorf("watch event: %+v", evs[0])
	}
	if evs[1].WatchOpened() || !evs[1].Relist() || !evs[1].Counted() || evs[1].Key() != "list pods" {
		t.Errorf("list event: %+v", evs[1])
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The rest of the partial line makes it malformed JSON only if it was read half.
	if _, err := io.WriteString(f, `ent","auditID":"3","stage":"ResponseComplete","verb":"watch","objectRef":{"resource":"pods"},"responseStatus":{"code":200}}`+"\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	evs, err = a.Next()
	if err != nil || len(evs) != 1 || evs[0].AuditID != "3" || evs[0].Counted() {
		t.Errorf("after the line was completed: %+v, %v (a closed watch is not a second request)", evs, err)
	}
}

func TestWatchesHold(t *testing.T) {
	stop := time.Date(2026, 12, 1, 16, 0, 0, 0, time.UTC)
	ev := func(id, stage string, at time.Duration) AuditEvent {
		e := AuditEvent{AuditID: id, Stage: stage, Verb: "watch", StageTimestamp: stop.Add(at)}
		e.ObjectRef.Resource = "pods"
		e.ResponseStatus.Code = 200
		e.User.Extra = map[string][]string{NodeNameExtra: {"n1"}}
		return e
	}
	w := newWatches(map[string]bool{"n1": true}, stop)
	w.add(ev("a", "ResponseStarted", 2*time.Second)) // closed at once: the new cache refused it
	w.add(ev("a", "ResponseComplete", 2100*time.Millisecond))
	w.add(ev("b", "ResponseStarted", 9*time.Second))
	w.check(stop.Add(10 * time.Second))
	if len(w.held) != 0 {
		t.Fatalf("held %v before the watch was open %s", w.held, watchHold)
	}
	w.check(stop.Add(12 * time.Second))
	if got := w.held["n1"]; !got.Equal(stop.Add(9 * time.Second)) {
		t.Errorf("held at %v, want the start of watch b", got)
	}
}

func TestSVG(t *testing.T) {
	run := Run{Date: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Results: []Result{
		{N: 10, ChurnRate: 10, Cores: 2, Steady: Figures{APIRSS: 400, APICPU: 0.02}, Churn: Figures{APIRSS: 420, APICPU: 0.2}},
		{N: 50, ChurnRate: 10, Cores: 2, Steady: Figures{APIRSS: 900, APICPU: 0.05}, Churn: Figures{APIRSS: 950, APICPU: 0.4}},
	}}
	var b bytes.Buffer
	if err := WriteSVG(&b, caption(run), Panels(run)); err != nil {
		t.Fatal(err)
	}
	// Well-formed XML, with one polyline per series.
	d := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	lines := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, b.String())
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			lines++
		}
	}
	if lines != 8 {
		t.Errorf("%d polylines, want 8 (3+2+2+1)", lines)
	}
	for v, want := range map[float64]float64{0: 1, 0.23: 0.4, 3: 4, 950: 1000, 1001: 2000, 10: 10} {
		if got := niceCeil(v); got != want {
			t.Errorf("niceCeil(%g) = %g, want %g", v, got, want)
		}
	}
}

func TestWindow(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 16, 0, 0, 0, time.UTC)
	a := Snapshot{At: t0, API: ProcStat{CPU: 10 * time.Second}, Requests: map[string]float64{"LIST pods": 100},
		Fleet:   []ProcStat{{CPU: time.Second}, {CPU: time.Second}},
		Machine: MachineCPU{Busy: 100 * time.Second, Total: 200 * time.Second}}
	z := Snapshot{At: t0.Add(10 * time.Second), API: ProcStat{RSS: 512 << 20, CPU: 12 * time.Second},
		Requests: map[string]float64{"LIST pods": 150, "WATCH pods": 10}, PodWatches: 12,
		Fleet:   []ProcStat{{RSS: 30 << 20, CPU: 2 * time.Second}, {RSS: 40 << 20, CPU: 1 * time.Second}, {RSS: 35 << 20}},
		Machine: MachineCPU{Busy: 115 * time.Second, Total: 220 * time.Second}}
	ev := func(at time.Duration, node string) AuditEvent {
		e := AuditEvent{Stage: "ResponseComplete", Verb: "patch", StageTimestamp: t0.Add(at)}
		e.ObjectRef.Resource, e.ObjectRef.Subresource = "pods", "status"
		if node != "" {
			e.User.Extra = map[string][]string{NodeNameExtra: {node}}
		}
		return e
	}
	f := Window(a, z, []AuditEvent{ev(time.Second, "n1"), ev(2*time.Second, "n2"), ev(3*time.Second, ""), ev(11*time.Second, "n1")})
	if f.APICPU != 0.2 || f.APIRSS != 512 || f.Requests != 6 || f.PodWatches != 12 {
		t.Errorf("API server figures %+v: want 0.2 cores, 512 MiB, 6 requests/s, 12 watches", f)
	}
	if f.FleetRequests != 0.2 || f.FleetByKey["patch pods/status"] != 0.2 {
		t.Errorf("fleet requests %g %v: want 0.2/s (two in the window from the fleet, one from another user, one after it)", f.FleetRequests, f.FleetByKey)
	}
	if f.CtrlRSSMedian != 35 || f.CtrlRSSMax != 40 || f.FleetCPU != 0.1 || f.MachineBusy != 0.75 {
		t.Errorf("fleet figures %+v: want median 35, max 40 MiB, 0.1 cores (the new controller has no first reading), 75%% busy", f)
	}
}

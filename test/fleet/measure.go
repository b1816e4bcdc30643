package fleet

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
)

// Snapshot is everything read at one moment: processes from /proc, the API server's metrics.
type Snapshot struct {
	At         time.Time
	API, Etcd  ProcStat
	Fleet      []ProcStat
	Machine    MachineCPU
	Requests   map[string]float64 // apiserver_request_total by "VERB resource[/subresource]"
	PodWatches float64            // apiserver_longrunning_requests{verb="WATCH",resource="pods"}
}

// Scrape returns the API server's /metrics, parsed.
func Scrape(ctx context.Context, c *cluster.Cluster) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second) // a loaded machine
	defer cancel()
	body, err := c.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver /metrics: %w", err)
	}
	return ParseMetrics(string(body))
}

// RequestCounts sums apiserver_request_total by "VERB resource[/subresource]".
func RequestCounts(m Metrics) map[string]float64 {
	out := map[string]float64{}
	for _, s := range m {
		if s.Name != "apiserver_request_total" {
			continue
		}
		key := s.Labels["verb"] + " " + s.Labels["resource"]
		if sub := s.Labels["subresource"]; sub != "" {
			key += "/" + sub
		}
		out[key] += s.Value
	}
	return out
}

// PodWatches is the number of pod watches the API server is serving.
func PodWatches(m Metrics) float64 {
	return m.Sum("apiserver_longrunning_requests", map[string]string{"verb": "WATCH", "resource": "pods", "subresource": ""})
}

// TakeSnapshot reads the control plane's processes, the fleet's and the API server's metrics.
func TakeSnapshot(ctx context.Context, c *cluster.Cluster, f *Fleet) (Snapshot, error) {
	s := Snapshot{At: time.Now()}
	pids := c.Pids()
	var err error
	if s.API, err = ReadProc(pids["kube-apiserver"]); err != nil {
		return s, fmt.Errorf("kube-apiserver: %w", err)
	}
	if s.Etcd, err = ReadProc(pids["etcd"]); err != nil {
		return s, fmt.Errorf("etcd: %w", err)
	}
	if f != nil {
		if s.Fleet, err = f.Stats(); err != nil {
			return s, err
		}
	}
	if s.Machine, err = ReadMachineCPU(); err != nil {
		return s, err
	}
	m, err := Scrape(ctx, c)
	if err != nil {
		return s, err
	}
	s.Requests, s.PodWatches = RequestCounts(m), PodWatches(m)
	return s, nil
}

// Figures describe one window between two snapshots of the same processes.
type Figures struct {
	Seconds                   float64
	APIRSS, EtcdRSS           float64 // MiB at the end
	APICPU, EtcdCPU           float64 // cores: CPU seconds per second
	Requests                  float64 // all requests per second (apiserver_request_total)
	FleetRequests             float64 // the fleet's requests per second (audit log)
	FleetByKey                map[string]float64
	PodWatches                float64 // at the end
	CtrlRSSMedian, CtrlRSSMax float64 // MiB at the end
	FleetCPU                  float64 // cores, all controllers together
	MachineBusy               float64 // fraction of all cores busy (everything on the machine)
	Load                      float64 // one-minute load average at the end
}

// Window computes the figures between a and b; fleet are the fleet's audited requests meanwhile.
func Window(a, b Snapshot, fleet []AuditEvent) Figures {
	secs := b.At.Sub(a.At).Seconds()
	cores := func(x, y time.Duration) float64 { return (y - x).Seconds() / secs }
	f := Figures{Seconds: secs,
		APIRSS: mib(b.API.RSS), EtcdRSS: mib(b.Etcd.RSS),
		APICPU: cores(a.API.CPU, b.API.CPU), EtcdCPU: cores(a.Etcd.CPU, b.Etcd.CPU),
		PodWatches: b.PodWatches, FleetByKey: map[string]float64{},
	}
	for k, v := range b.Requests {
		f.Requests += (v - a.Requests[k]) / secs
	}
	for _, ev := range fleet {
		if ev.Counted() && ev.Node() != "" && !ev.StageTimestamp.Before(a.At) && ev.StageTimestamp.Before(b.At) {
			f.FleetRequests += 1 / secs
			f.FleetByKey[ev.Key()] += 1 / secs
		}
	}
	rss := make([]float64, 0, len(b.Fleet))
	for i, st := range b.Fleet {
		rss = append(rss, mib(st.RSS))
		if i < len(a.Fleet) {
			f.FleetCPU += cores(a.Fleet[i].CPU, st.CPU)
		}
	}
	if len(rss) > 0 {
		slices.Sort(rss)
		f.CtrlRSSMedian, f.CtrlRSSMax = rss[len(rss)/2], rss[len(rss)-1]
	}
	if total := (b.Machine.Total - a.Machine.Total).Seconds(); total > 0 {
		f.MachineBusy = (b.Machine.Busy - a.Machine.Busy).Seconds() / total
	}
	f.Load, _ = LoadAverage()
	return f
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

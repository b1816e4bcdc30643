package netns

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
)

// BenchmarkFind measures Find, proof included, with 50 pod namespaces around, each held by a
// process in a cgroup of its pod UID, holding its IP on a veth, pinned by name in a netns directory
// and described by a CNI result record (as containerd does). Each strategy scans everything it sees
// (to detect ambiguity), so the target's position does not matter. The name says what finds the
// namespace and, after "+", what proves it: cni-cache reads the 50 records, proc-uid walks /proc
// (and checks that no other pod runs in the namespace). The cached variants hit the handle cache;
// proof-cached misses it (the pod's IPs alternate) and takes the proof from the cookie cache. The
// -inside variants read the addresses inside each namespace (as on a kernel without
// IFA_TARGET_NETNSID) instead of through the Finder's addrReader.
func BenchmarkFind(b *testing.B) {
	testutil.RequireRoot(b)
	const pods = 50
	dir, records := b.TempDir(), b.TempDir()
	type pod struct {
		uid string
		ip  netip.Addr
		s   *sandbox
	}
	var all []pod
	for range pods {
		p := pod{uid: newUID(), ip: newIPv4()}
		p.s = newProc(b, false, podCgroup(b, p.uid))
		p.s.addVeth(b, p.ip)
		recordFor(b, records, p.uid, p.s.pinNamed(b, dir))
		all = append(all, p)
	}
	target := all[pods/2]
	want := target.s.key(b)
	ctx := context.Background()

	named := func(proof ...Strategy) Options {
		return Options{Strategies: append([]Strategy{StrategyNamed}, proof...), NetnsDirs: []string{dir}, CNIResultsDir: records}
	}
	for _, c := range []struct {
		name   string
		opts   Options
		inside bool
		ips    [][]netip.Addr // alternated
	}{
		{"named+cni-cache", named(StrategyCNICache), false, nil},
		{"named+cni-cache-inside", named(StrategyCNICache), true, nil},
		{"named+proc-uid", named(StrategyProcUID), false, nil},
		{"named+cni-cache+proc-uid", named(StrategyCNICache, StrategyProcUID), false, nil},
		{"cni-cache", Options{Strategies: []Strategy{StrategyCNICache}, NetnsDirs: []string{dir}, CNIResultsDir: records}, false, nil},
		{"proc-uid", only(StrategyProcUID), false, nil},
		{"proc-ip+proc-uid", only(StrategyProcIP, StrategyProcUID), false, nil},
		{"proc-ip+proc-uid-inside", only(StrategyProcIP, StrategyProcUID), true, nil},
		{"proof-cached", withCache(named(StrategyCNICache, StrategyProcUID)), false,
			[][]netip.Addr{{target.ip}, {target.ip, newIPv4()}}},
		{"cached", withCache(named(StrategyCNICache, StrategyProcUID)), false, nil},
		{"cached-inside", withCache(named(StrategyCNICache, StrategyProcUID)), true, nil},
	} {
		b.Run(c.name, func(b *testing.B) {
			f := newFinder(b, c.opts)
			if c.inside {
				err := errors.New("benchmark: read inside")
				f.noReader.Store(&err)
			}
			ips := c.ips
			if ips == nil {
				ips = [][]netip.Addr{{target.ip}}
			}
			i := 0
			for b.Loop() {
				h, err := f.Find(ctx, target.uid, ips[i%len(ips)])
				i++
				if err != nil {
					b.Fatal(err)
				}
				if h.Key() != want {
					b.Fatalf("found inode %d, want %d", h.Inode(), want.Ino)
				}
				h.Close()
			}
			b.ReportMetric(float64(f.procScans.Load())/float64(i), "walks/op")
		})
	}
	b.Run("Do", func(b *testing.B) {
		h, err := Open(target.s.Path)
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		for b.Loop() {
			if err := h.Do(func() error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func withCache(o Options) Options {
	o.Cache = true
	return o
}

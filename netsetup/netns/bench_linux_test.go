package netns

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
)

// BenchmarkFind measures Find with 50 pod namespaces around, each held by a process in a cgroup of
// its pod UID, holding its IP on a veth, and pinned by name in a netns directory (as containerd
// does). Each strategy scans everything it sees (to detect ambiguity), so the target's position
// does not matter. The -inside variants read the addresses inside each namespace (as on a kernel
// without IFA_TARGET_NETNSID) instead of through the Finder's addrReader.
func BenchmarkFind(b *testing.B) {
	testutil.RequireRoot(b)
	const pods = 50
	dir := b.TempDir()
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
		p.s.pinNamed(b, dir)
		all = append(all, p)
	}
	target := all[pods/2]
	want := target.s.key(b)
	ctx := context.Background()

	for _, c := range []struct {
		name   string
		opts   Options
		inside bool
	}{
		{"named", Options{Strategies: []Strategy{StrategyNamed}, NetnsDirs: []string{dir}}, false},
		{"named-inside", Options{Strategies: []Strategy{StrategyNamed}, NetnsDirs: []string{dir}}, true},
		{"proc-uid", Options{Strategies: []Strategy{StrategyProcUID}}, false},
		{"proc-ip", Options{Strategies: []Strategy{StrategyProcIP}}, false},
		{"proc-ip-inside", Options{Strategies: []Strategy{StrategyProcIP}}, true},
		{"cached", Options{NetnsDirs: []string{dir}, Cache: true}, false},
		{"cached-inside", Options{NetnsDirs: []string{dir}, Cache: true}, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			f := newFinder(b, c.opts)
			if c.inside {
				err := errors.New("benchmark: read inside")
				f.noReader.Store(&err)
			}
			for b.Loop() {
				h, err := f.Find(ctx, target.uid, []netip.Addr{target.ip})
				if err != nil {
					b.Fatal(err)
				}
				if h.Key() != want {
					b.Fatalf("found inode %d, want %d", h.Inode(), want.Ino)
				}
				h.Close()
			}
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

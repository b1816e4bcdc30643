package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"k8s.io/klog/v2"
)

// maxIdleReaders bounds the address readers kept for reuse (about one per concurrent Find).
const maxIdleReaders = 8

// search is one Find's state: what it looks for, and what it read once and shares between the
// strategies and the proof (the /proc walk, the CNI records).
type search struct {
	f    *Finder
	ctx  context.Context
	uid  string // as given
	nuid string // normalized (as in cgroup paths and records, after normalizeUID)
	ips  []netip.Addr
	rd   *addrReader

	procs   *procIndex // nil until needed
	records *recordSet // nil until needed
}

func (f *Finder) newSearch(ctx context.Context, uid string, ips []netip.Addr) *search {
	s := &search{f: f, ctx: ctx, uid: uid, nuid: normalizeUID(uid), ips: ips, rd: f.reader()}
	if why := f.noReader.Load(); why != nil && f.noReaderLogged.CompareAndSwap(false, true) {
		klog.FromContext(ctx).V(2).Info("Reading the addresses of network namespaces from inside them", "reason", (*why).Error())
	}
	return s
}

func (s *search) done() { s.f.putReader(s.rd) }

// scan is what one strategy found and a line saying what it looked at.
type scan struct {
	cands []*candidate
	note  string
	host  string // set when the pod's IPs or processes were seen only in the host namespace
}

func (s *search) run(st Strategy) scan {
	switch st {
	case StrategyNamed:
		return s.findNamed()
	case StrategyCNICache:
		return s.findCNICache()
	case StrategyProcUID:
		return s.findProcUID()
	case StrategyProcIP:
		return s.findProcIP()
	}
	return scan{note: fmt.Sprintf("%s: unknown strategy", st)}
}

// tally counts what the strategies' namespaces came to, for their notes.
type tally struct {
	opened   int // namespaces opened and tested
	host     int // the host's, skipped
	notNS    int // paths that are not namespaces (a file left behind by a deleted netns)
	rejected rejections
	errs     failures
}

// consider is the one step every strategy takes with a namespace: open the first of paths that
// opens to the namespace want (the zero Key: whatever it opens to), skip the host's, test the pod
// IPs live, and keep it (a candidate) or reject it (counted in t, closed).
func (s *search) consider(t *tally, want Key, paths ...string) *candidate {
	var h *Handle
	for _, p := range paths {
		o, err := Open(p)
		if err != nil {
			if errors.As(err, new(ns.NSPathNotNSErr)) {
				t.notNS++
			} else {
				t.errs.fail(err)
			}
			continue
		}
		if want != (Key{}) && o.Key() != want {
			o.Close() // the pid was reused, or the name now pins another namespace
			continue
		}
		h = o
		break
	}
	if h == nil {
		return nil
	}
	if s.f.isHost(h.Key()) {
		t.host++
		h.Close()
		return nil
	}
	t.opened++
	holds, all, err := s.f.holdsAny(s.rd, h, s.ips)
	if err != nil {
		t.errs.fail(err)
	}
	if len(holds) == 0 {
		t.rejected.add(h, all)
		h.Close()
		return nil
	}
	return &candidate{h: h, holds: holds}
}

// reader returns an address reader for this goroutine's use (nil: read inside the namespaces);
// hand it back with putReader.
func (f *Finder) reader() *addrReader {
	if f.noReader.Load() != nil {
		return nil
	}
	f.mu.Lock()
	if n := len(f.readers); n > 0 {
		r := f.readers[n-1]
		f.readers = f.readers[:n-1]
		f.mu.Unlock()
		return r
	}
	f.mu.Unlock()
	r, err := newAddrReader(f.hostID)
	if err != nil {
		if errors.Is(err, errNoTargetNetnsid) {
			f.noReader.CompareAndSwap(nil, &err)
		}
		return nil
	}
	return r
}

func (f *Finder) putReader(r *addrReader) {
	if r == nil {
		return
	}
	f.mu.Lock()
	if !r.broken && !f.closed && len(f.readers) < maxIdleReaders {
		f.readers = append(f.readers, r)
		r = nil
	}
	f.mu.Unlock()
	if r != nil {
		r.close()
	}
}

// holdsAny returns the pod IPs h holds, and everything it holds: read through r when the kernel
// allows it, else (r nil, or the reader failed) inside the namespace. Both read the live state.
func (f *Finder) holdsAny(r *addrReader, h *Handle, ips []netip.Addr) (holds, all []netip.Addr, err error) {
	if r != nil && f.noReader.Load() == nil {
		all, err = r.addrs(h)
		if errors.Is(err, errNoTargetNetnsid) {
			f.noReader.CompareAndSwap(nil, &err)
		}
	}
	if r == nil || err != nil {
		all, err = h.Addrs()
	}
	for _, ip := range ips {
		if containsAddr(all, ip) {
			holds = append(holds, ip)
		}
	}
	return holds, all, err
}

// rejections lists namespaces that did not hold the pod IPs, for the not-found message.
type rejections struct {
	n     int
	items []string
}

func (r *rejections) add(h *Handle, addrs []netip.Addr) {
	r.n++
	if len(r.items) < 3 {
		if len(addrs) > 4 {
			addrs = addrs[:4]
		}
		r.items = append(r.items, fmt.Sprintf("%s (inode %d) holds %v", h.Path(), h.Inode(), addrs))
	}
}

func (r rejections) suffix() string {
	if r.n == 0 {
		return ""
	}
	more := ""
	if r.n > len(r.items) {
		more = fmt.Sprintf(", and %d more", r.n-len(r.items))
	}
	return " (rejected: " + strings.Join(r.items, ", ") + more + ")"
}

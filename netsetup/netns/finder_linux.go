package netns

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// maxPIDs bounds the process IDs kept per candidate (for messages).
const maxPIDs = 8

// maxIdleReaders bounds the address readers kept for reuse (about one per concurrent Find).
const maxIdleReaders = 8

// Finder finds pods' network namespaces (see Find). It is safe for concurrent use; Close it when done.
type Finder struct {
	opts   Options
	self   *Handle // the controller's own network namespace
	hostID contract.NetnsID
	host   []Key // self, and PID 1 of ProcDir when readable: never returned

	mu      sync.Mutex
	cache   map[string]*cacheEntry
	readers []*addrReader // idle, for reuse
	closed  bool

	// noReader is why namespaces' addresses are read from inside them (nil: through an
	// addrReader); set once, when the kernel turns out not to support the reader.
	noReader       atomic.Pointer[error]
	noReaderLogged atomic.Bool

	hits, misses atomic.Int64
}

type cacheEntry struct {
	h   *Handle // the cache's own reference
	ips []netip.Addr
}

// candidate is a namespace that holds a pod IP, while Find decides.
type candidate struct {
	h        *Handle
	holds    []netip.Addr
	pids     []int
	uidMatch bool
}

// New returns a Finder. The host namespaces it never returns are its own (/proc/self/ns/net) and,
// when readable, that of PID 1 in opts.ProcDir.
func New(opts Options) (*Finder, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(opts.ProcDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("proc directory %q: not a readable directory: %v", opts.ProcDir, err)
	}
	self, err := Open("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("host network namespace: %w", err)
	}
	id, err := self.ID()
	if err != nil {
		self.Close()
		return nil, fmt.Errorf("host network namespace: %w", err)
	}
	f := &Finder{opts: opts, self: self, hostID: id, host: []Key{self.Key()}, cache: map[string]*cacheEntry{}}
	if k, err := statKey(opts.ProcDir + "/1/ns/net"); err == nil && k != self.Key() {
		f.host = append(f.host, k)
	}
	return f, nil
}

// HostID is the identity of the controller's own (the host's) network namespace.
func (f *Finder) HostID() contract.NetnsID { return f.hostID }

// IsHost reports whether h is the host's network namespace (the controller's own or PID 1's).
func (f *Finder) IsHost(h *Handle) bool { return f.isHost(h.Key()) }

func (f *Finder) isHost(k Key) bool { return slices.Contains(f.host, k) }

// Find returns the network namespace of the pod with UID podUID and IPs podIPs; the caller closes it.
//
// The strategies run in order; the first that yields candidates decides. A candidate holds one of
// podIPs and is not the host's namespace. One candidate is the answer; several are resolved by pod
// UID (the one namespace running a process in a cgroup of the pod) or reported as *AmbiguousError.
// Errors: ErrNotFound (nothing yet: retry later), ErrAmbiguous, ErrHostNamespace, or bad arguments;
// they say what was looked at.
//
// With Options.Cache, a namespace found for podUID is kept (one fd) and returned again while it is
// still pinned where it was found (the named file or /proc/<pid>/ns/net points to it) and holds one
// of podIPs; a different set of podIPs drops it. Forget drops it for good (pod deleted).
func (f *Finder) Find(ctx context.Context, podUID string, podIPs []netip.Addr) (*Handle, error) {
	ips, err := validatePod(podUID, podIPs)
	if err != nil {
		return nil, err
	}
	if f.opts.Cache {
		if h := f.cached(podUID, ips); h != nil {
			f.hits.Add(1)
			return h, nil
		}
		f.misses.Add(1)
	}
	h, err := f.discover(ctx, podUID, ips)
	if err != nil {
		return nil, err
	}
	if f.opts.Cache {
		f.store(podUID, ips, h.clone())
	}
	return h, nil
}

// Forget drops and closes the cached namespace of podUID, if any (call it when the pod is deleted).
func (f *Finder) Forget(podUID string) {
	f.mu.Lock()
	e := f.cache[podUID]
	delete(f.cache, podUID)
	f.mu.Unlock()
	if e != nil {
		e.h.Close()
	}
}

// Cached returns how many pods have a cached namespace fd.
func (f *Finder) Cached() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.cache)
}

// Close closes the cache and the Finder's own fds. Handles returned by Find stay valid.
func (f *Finder) Close() error {
	f.mu.Lock()
	cache, readers := f.cache, f.readers
	f.cache, f.readers, f.closed = map[string]*cacheEntry{}, nil, true
	f.mu.Unlock()
	for _, e := range cache {
		e.h.Close()
	}
	for _, r := range readers {
		r.close()
	}
	return f.self.Close()
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

// cached returns a new reference to podUID's cached namespace if it is still valid, else drops it.
func (f *Finder) cached(podUID string, ips []netip.Addr) *Handle {
	f.mu.Lock()
	e := f.cache[podUID]
	if e == nil {
		f.mu.Unlock()
		return nil
	}
	if !sameAddrSet(e.ips, ips) {
		delete(f.cache, podUID)
		f.mu.Unlock()
		e.h.Close()
		return nil
	}
	h := e.h.clone()
	f.mu.Unlock()

	if k, err := statKey(h.Path()); err == nil && k == h.Key() {
		r := f.reader()
		holds, _, err := f.holdsAny(r, h, ips)
		f.putReader(r)
		if err == nil && len(holds) > 0 {
			return h
		}
	}
	h.Close()
	f.mu.Lock()
	if f.cache[podUID] == e {
		delete(f.cache, podUID)
	} else {
		e = nil
	}
	f.mu.Unlock()
	if e != nil {
		e.h.Close()
	}
	return nil
}

func (f *Finder) store(podUID string, ips []netip.Addr, h *Handle) {
	f.mu.Lock()
	old := f.cache[podUID]
	f.cache[podUID] = &cacheEntry{h: h, ips: ips}
	f.mu.Unlock()
	if old != nil {
		old.h.Close()
	}
}

// scan is what one strategy found and a line saying what it looked at.
type scan struct {
	cands []*candidate
	note  string
	host  string // set when the pod's IPs or processes were seen only in the host namespace
}

func (f *Finder) discover(ctx context.Context, uid string, ips []netip.Addr) (*Handle, error) {
	r := f.reader()
	defer f.putReader(r)
	if why := f.noReader.Load(); why != nil && f.noReaderLogged.CompareAndSwap(false, true) {
		klog.FromContext(ctx).V(2).Info("Reading the addresses of network namespaces from inside them", "reason", (*why).Error())
	}
	var looked, host []string
	for _, s := range f.opts.Strategies {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var sc scan
		switch s {
		case StrategyNamed:
			sc = f.findNamed(ctx, r, ips)
		case StrategyProcUID:
			sc = f.findProcUID(ctx, r, uid, ips)
		case StrategyProcIP:
			sc = f.findProcIP(ctx, r, ips)
		}
		if err := ctx.Err(); err != nil { // a cut-short scan could miss a second candidate
			for _, c := range sc.cands {
				c.h.Close()
			}
			return nil, fmt.Errorf("pod UID %q: %s: %w", uid, s, err)
		}
		looked = append(looked, sc.note)
		if sc.host != "" {
			host = append(host, sc.host)
		}
		if len(sc.cands) == 0 {
			continue
		}
		for _, c := range sc.cands {
			c.h.source = s
		}
		h, err := f.pick(ctx, uid, ips, sc.cands)
		if err != nil {
			return nil, err
		}
		if f.isHost(h.Key()) { // defence in depth: every strategy already skips it
			h.Close()
			return nil, fmt.Errorf("%w: pod UID %q: %s resolved to it", ErrHostNamespace, uid, s)
		}
		klog.FromContext(ctx).V(4).Info("Found pod network namespace", "podUID", uid, "podIPs", ips,
			"strategy", s, "path", h.Path(), "inode", h.Inode())
		return h, nil
	}
	if holds, _, err := f.holdsAny(nil, f.self, ips); err == nil && len(holds) > 0 {
		host = append(host, fmt.Sprintf("the host network namespace holds %v", holds))
	}
	if len(host) > 0 {
		return nil, fmt.Errorf("%w: pod UID %q with IPs %v: %s; looked at: %s",
			ErrHostNamespace, uid, ips, strings.Join(host, "; "), strings.Join(looked, "; "))
	}
	return nil, fmt.Errorf("%w for pod UID %q with IPs %v: %s", ErrNotFound, uid, ips, strings.Join(looked, "; "))
}

// pick returns the one candidate, or the one running processes of the pod; it closes the others.
func (f *Finder) pick(ctx context.Context, uid string, ips []netip.Addr, cands []*candidate) (*Handle, error) {
	if len(cands) == 1 {
		return cands[0].h, nil
	}
	procs := f.markUID(ctx, uid, cands)
	var winners []*candidate
	for _, c := range cands {
		if c.uidMatch {
			winners = append(winners, c)
		}
	}
	if len(winners) == 1 {
		for _, c := range cands {
			if c != winners[0] {
				c.h.Close()
			}
		}
		return winners[0].h, nil
	}
	e := &AmbiguousError{PodUID: uid, PodIPs: ips}
	for _, c := range cands {
		e.Candidates = append(e.Candidates, Candidate{Strategy: c.h.source, Path: c.h.Path(), Inode: c.h.Inode(),
			Holds: c.holds, PIDs: c.pids, UIDMatch: c.uidMatch})
		c.h.Close()
	}
	if len(winners) == 0 {
		e.Resolution = "none runs a process in a cgroup of the pod (" + procs.String() + ")"
	} else {
		e.Resolution = fmt.Sprintf("%d run processes in cgroups of the pod (a sandbox being re-created?)", len(winners))
	}
	return nil, e
}

// markUID scans the processes, noting those in each candidate and marking the candidates running
// one in a cgroup of the pod.
func (f *Finder) markUID(ctx context.Context, uid string, cands []*candidate) procStats {
	byKey := make(map[Key]*candidate, len(cands))
	for _, c := range cands {
		byKey[c.h.Key()] = c
	}
	return f.eachProc(ctx, func(pid int, st *procStats) {
		k, err := statKey(f.procPath(pid, "ns/net"))
		if err != nil {
			st.fail(err)
			return
		}
		c := byKey[k]
		if c == nil {
			return
		}
		if len(c.pids) < maxPIDs && !slices.Contains(c.pids, pid) {
			c.pids = append(c.pids, pid)
		}
		if c.uidMatch {
			return
		}
		data, err := os.ReadFile(f.procPath(pid, "cgroup"))
		if err != nil {
			st.fail(err)
			return
		}
		c.uidMatch = cgroupHasPod(string(data), uid)
	})
}

// findNamed checks the named namespaces in the netns directories.
func (f *Finder) findNamed(ctx context.Context, rd *addrReader, ips []netip.Addr) scan {
	var (
		r        scan
		dirs     []string
		seenDirs = map[Key]int{} // index in dirs
		seen     = map[Key]bool{}
		n, host  int
		rejected rejections
		errs     procStats
	)
	for _, dir := range f.opts.NetnsDirs {
		dk, err := statKey(dir)
		if errors.Is(err, fs.ErrNotExist) {
			dirs = append(dirs, dir+" (absent)")
			continue
		}
		if err != nil {
			dirs = append(dirs, fmt.Sprintf("%s (%v)", dir, err))
			continue
		}
		if i, ok := seenDirs[dk]; ok {
			dirs[i] += " (= " + dir + ")"
			continue
		}
		seenDirs[dk] = len(dirs)
		dirs = append(dirs, dir)
		names, err := readDirNames(dir)
		if err != nil {
			errs.fail(err)
			continue
		}
		slices.Sort(names)
		for _, name := range names {
			if ctx.Err() != nil {
				break
			}
			p := dir + "/" + name
			k, err := statKey(p)
			if err != nil || seen[k] {
				continue // vanished, or seen under another name
			}
			seen[k] = true
			if f.isHost(k) {
				host++
				continue
			}
			h, err := Open(p)
			if err != nil {
				continue // not a namespace: a file left behind by a deleted netns
			}
			if h.Key() != k {
				h.Close()
				continue
			}
			n++
			holds, all, err := f.holdsAny(rd, h, ips)
			if err != nil {
				errs.fail(err)
			}
			if len(holds) == 0 {
				rejected.add(h, all)
				h.Close()
				continue
			}
			r.cands = append(r.cands, &candidate{h: h, holds: holds})
		}
	}
	hostNote := ""
	if host > 0 {
		hostNote = fmt.Sprintf(" (and %d naming the host's, skipped)", host)
	}
	r.note = fmt.Sprintf("%s: %d namespaces in %s%s, %d hold the pod IPs%s%s",
		StrategyNamed, n, strings.Join(dirs, ", "), hostNote, len(r.cands), errs.suffix(), rejected.suffix())
	return r
}

// findProcUID checks the namespaces of the processes in cgroups of the pod.
func (f *Finder) findProcUID(ctx context.Context, rd *addrReader, uid string, ips []netip.Addr) scan {
	var (
		r        scan
		order    []Key
		pids     = map[Key][]int{}
		hostPIDs []int
		matched  int
		rejected rejections
	)
	st := f.eachProc(ctx, func(pid int, st *procStats) {
		data, err := os.ReadFile(f.procPath(pid, "cgroup"))
		if err != nil {
			st.fail(err)
			return
		}
		if !cgroupHasPod(string(data), uid) {
			return
		}
		matched++
		k, err := statKey(f.procPath(pid, "ns/net"))
		if err != nil {
			st.fail(err)
			return
		}
		if f.isHost(k) {
			hostPIDs = append(hostPIDs, pid)
			return
		}
		if _, ok := pids[k]; !ok {
			order = append(order, k)
		}
		pids[k] = append(pids[k], pid)
	})
	for _, k := range order {
		h := f.openProc(k, pids[k])
		if h == nil {
			st.fail(fmt.Errorf("namespace inode %d of pids %v: gone or unreadable", k.Ino, pids[k]))
			continue
		}
		holds, all, err := f.holdsAny(rd, h, ips)
		if err != nil {
			st.fail(err)
		}
		if len(holds) == 0 {
			rejected.add(h, all)
			h.Close()
			continue
		}
		r.cands = append(r.cands, &candidate{h: h, holds: holds, pids: firstPIDs(pids[k]), uidMatch: true})
	}
	if len(hostPIDs) > 0 && len(order) == 0 {
		r.host = fmt.Sprintf("processes %v in cgroups of the pod run in the host network namespace (a hostNetwork pod?)",
			firstPIDs(hostPIDs))
	}
	r.note = fmt.Sprintf("%s: %s, %d in cgroups of the pod (%d of them in the host's namespace), %d other namespaces of theirs, %d hold the pod IPs%s",
		StrategyProcUID, st.String(), matched, len(hostPIDs), len(order), len(r.cands), rejected.suffix())
	return r
}

// findProcIP checks each distinct namespace of the processes once.
func (f *Finder) findProcIP(ctx context.Context, rd *addrReader, ips []netip.Addr) scan {
	var (
		r    scan
		seen = map[Key]*candidate{} // nil value: checked, does not hold the IPs
		n    int
	)
	st := f.eachProc(ctx, func(pid int, st *procStats) {
		p := f.procPath(pid, "ns/net")
		k, err := statKey(p)
		if err != nil {
			st.fail(err)
			return
		}
		if f.isHost(k) {
			return
		}
		if c, ok := seen[k]; ok {
			if c != nil && len(c.pids) < maxPIDs {
				c.pids = append(c.pids, pid)
			}
			return
		}
		h, err := Open(p)
		if err != nil {
			st.fail(err) // another process in the namespace may do
			return
		}
		if h.Key() != k {
			h.Close()
			return
		}
		n++
		holds, _, err := f.holdsAny(rd, h, ips)
		if err != nil {
			st.fail(err)
		}
		if len(holds) == 0 {
			h.Close()
			seen[k] = nil
			return
		}
		c := &candidate{h: h, holds: holds, pids: []int{pid}}
		seen[k] = c
		r.cands = append(r.cands, c)
	})
	r.note = fmt.Sprintf("%s: %s, %d distinct namespaces besides the host's, %d hold the pod IPs",
		StrategyProcIP, st.String(), n, len(r.cands))
	return r
}

// openProc opens namespace k through the first of pids still in it.
func (f *Finder) openProc(k Key, pids []int) *Handle {
	for _, pid := range pids {
		h, err := Open(f.procPath(pid, "ns/net"))
		if err != nil {
			continue
		}
		if h.Key() == k {
			return h
		}
		h.Close() // the pid was reused
	}
	return nil
}

func (f *Finder) procPath(pid int, rel string) string {
	return f.opts.ProcDir + "/" + strconv.Itoa(pid) + "/" + rel
}

// procStats counts the processes a scan looked at.
type procStats struct {
	dir        string
	procs      int
	unreadable int
	first      error
}

// fail counts an unreadable process; a process that exited meanwhile is not a failure.
func (s *procStats) fail(err error) {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return
	}
	s.unreadable++
	if s.first == nil {
		s.first = err
	}
}

func (s procStats) String() string {
	return fmt.Sprintf("%d processes in %s%s", s.procs, s.dir, s.suffix())
}

func (s procStats) suffix() string {
	if s.unreadable == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d unreadable, first: %v)", s.unreadable, s.first)
}

// eachProc calls fn for every process in ProcDir, until ctx is done.
func (f *Finder) eachProc(ctx context.Context, fn func(pid int, st *procStats)) procStats {
	st := procStats{dir: f.opts.ProcDir}
	names, err := readDirNames(f.opts.ProcDir)
	if err != nil {
		st.unreadable++
		st.first = err
		return st
	}
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue
		}
		if ctx.Err() != nil {
			st.fail(ctx.Err())
			break
		}
		st.procs++
		fn(pid, &st)
	}
	return st
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

func firstPIDs(pids []int) []int {
	if len(pids) > maxPIDs {
		return pids[:maxPIDs]
	}
	return pids
}

func statKey(path string) (Key, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Key{}, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return Key{Dev: st.Dev, Ino: st.Ino}, nil
}

func readDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

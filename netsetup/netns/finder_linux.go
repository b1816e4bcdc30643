package netns

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"k8s.io/klog/v2"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// maxPIDs bounds the process IDs kept per candidate (for messages).
const maxPIDs = 8

// Finder finds pods' network namespaces and proves them (see Find). It is safe for concurrent use;
// Close it when done.
type Finder struct {
	opts   Options
	self   *Handle // the controller's own network namespace
	hostID contract.NetnsID
	host   []Key // self, and PID 1 of ProcDir when readable: never returned
	// selfPods are the pod UIDs of the controller's own cgroup (it runs in a pod of the DaemonSet):
	// its processes, and the commands it runs inside a namespace, count as host processes.
	selfPods []string

	mu      sync.Mutex
	cache   map[string]*cacheEntry // by pod UID as given
	proofs  map[uint64]proofEntry  // by namespace cookie
	readers []*addrReader          // idle, for reuse
	closed  bool

	// noReader is why namespaces' addresses are read from inside them (nil: through an
	// addrReader); set once, when the kernel turns out not to support the reader.
	noReader       atomic.Pointer[error]
	noReaderLogged atomic.Bool

	hits, misses atomic.Int64 // the handle cache
	proofHits    atomic.Int64 // the proof cache
	procScans    atomic.Int64 // walks of ProcDir
	recordScans  atomic.Int64 // reads of CNIResultsDir
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
	f := &Finder{opts: opts, self: self, hostID: id, host: []Key{self.Key()},
		cache: map[string]*cacheEntry{}, proofs: map[uint64]proofEntry{}}
	if k, err := statKey(opts.ProcDir + "/1/ns/net"); err == nil && k != self.Key() {
		f.host = append(f.host, k)
	}
	if data, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		f.selfPods = cgroupPodUIDs(string(data))
	}
	return f, nil
}

// HostID is the identity of the controller's own (the host's) network namespace.
func (f *Finder) HostID() contract.NetnsID { return f.hostID }

// IsHost reports whether h is the host's network namespace (the controller's own or PID 1's).
func (f *Finder) IsHost(h *Handle) bool { return f.isHost(h.Key()) }

func (f *Finder) isHost(k Key) bool { return slices.Contains(f.host, k) }

// Find returns the network namespace of the pod with UID podUID and IPs podIPs, proven to be that
// pod's; the caller closes it. Handle.Proof says what proved it.
//
// The strategies run in order. Each yields candidates: namespaces holding one of podIPs that are
// not the host's. Every candidate is checked against the enabled evidence (a CNI record of the pod
// naming it, a process of the pod in it; see the package documentation); the first strategy with a
// proven candidate decides. Errors: ErrNotFound (nothing holds the IPs yet: retry later),
// ErrNotProven (something does, but nothing proves it is the pod's: retry later), ErrShared,
// ErrAmbiguous, ErrHostNamespace, or bad arguments; they say what was looked at.
//
// With Options.Cache, a namespace found for podUID is kept (one fd) and returned again while it is
// still pinned where it was found (the named file or /proc/<pid>/ns/net points to it) and holds one
// of podIPs; a different set of podIPs drops it. The proof of a namespace is kept by its cookie (a
// cookie is never reused and a sandbox never changes pod), so finding it again does not rescan.
// Forget drops both for good (pod deleted).
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

// Close closes the cache and the Finder's own fds. Handles returned by Find stay valid.
func (f *Finder) Close() error {
	f.mu.Lock()
	cache, readers := f.cache, f.readers
	f.cache, f.readers, f.proofs, f.closed = map[string]*cacheEntry{}, nil, map[uint64]proofEntry{}, true
	f.mu.Unlock()
	for _, e := range cache {
		e.h.Close()
	}
	for _, r := range readers {
		r.close()
	}
	return f.self.Close()
}

func (f *Finder) discover(ctx context.Context, uid string, ips []netip.Addr) (*Handle, error) {
	s := f.newSearch(ctx, uid, ips)
	defer s.done()
	var (
		looked, host []string
		unproven     []Candidate
	)
	for _, st := range f.opts.Strategies {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		sc := s.run(st)
		if err := ctx.Err(); err != nil { // a cut-short scan could miss a second candidate
			closeAll(sc.cands)
			return nil, fmt.Errorf("pod UID %q: %s: %w", uid, st, err)
		}
		looked = append(looked, sc.note)
		if sc.host != "" {
			host = append(host, sc.host)
		}
		if len(sc.cands) == 0 {
			continue
		}
		h, un, err := s.decide(st, sc.cands)
		if err != nil {
			return nil, err
		}
		if h == nil {
			unproven = appendNew(unproven, un)
			continue
		}
		if f.isHost(h.Key()) { // defence in depth: every strategy already skips it
			h.Close()
			return nil, fmt.Errorf("%w: pod UID %q: %s resolved to it", ErrHostNamespace, uid, st)
		}
		klog.FromContext(ctx).V(4).Info("Found pod network namespace", "podUID", uid, "podIPs", ips,
			"strategy", st, "path", h.Path(), "inode", h.Inode(), "proof", h.Proof().String())
		return h, nil
	}
	if len(unproven) > 0 {
		return nil, &NotProvenError{PodUID: uid, PodIPs: ips, Candidates: unproven, Looked: looked}
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

// decide proves the candidates one strategy found and returns the one proven to be the pod's
// (closing the others), or nil and the candidates none of which is proven (all closed), or an
// error: a proven namespace shared with another pod, or several proven ones.
func (s *search) decide(st Strategy, cands []*candidate) (*Handle, []Candidate, error) {
	var proven []*candidate
	for _, c := range cands {
		c.h.source = st
		s.prove(c)
		if !c.proof.Proven() {
			continue
		}
		if len(c.foreign) > 0 {
			err := &SharedError{PodUID: s.uid, Candidate: c.describe(), PodPIDs: c.proof.PIDs, Others: c.foreign}
			closeAll(cands)
			return nil, nil, err
		}
		proven = append(proven, c)
	}
	switch len(proven) {
	case 1:
		c := proven[0]
		for _, o := range cands {
			if o != c {
				o.h.Close()
			}
		}
		p := c.proof
		c.h.proof = &p
		s.f.rememberProof(c.cookie, s.nuid, c.proof)
		return c.h, nil, nil
	case 0:
		descs := describeAll(cands)
		closeAll(cands)
		return nil, descs, nil
	}
	e := &AmbiguousError{PodUID: s.uid, PodIPs: s.ips, Candidates: describeAll(cands),
		Resolution: fmt.Sprintf("%d are proven to be the pod's (a sandbox being re-created?)", len(proven))}
	closeAll(cands)
	return nil, nil, e
}

// candidate is a namespace that holds a pod IP, while Find decides.
type candidate struct {
	h       *Handle
	holds   []netip.Addr
	pids    []int            // processes seen in it, if known
	cookie  uint64           // its SO_NETNS_COOKIE when read (0: not read, or no cookie)
	proof   Proof            // what proved it, if anything
	why     []string         // why the evidence did not prove it
	foreign map[string][]int // other pods' processes in it
}

func (c *candidate) describe() Candidate {
	pids := c.pids
	if len(pids) == 0 {
		pids = c.proof.PIDs
	}
	return Candidate{Strategy: c.h.source, Path: c.h.Path(), Inode: c.h.Inode(), Holds: c.holds, PIDs: pids,
		UIDMatch: c.proof.Proven(), Proof: c.proof, Why: strings.Join(c.why, "; ")}
}

func describeAll(cands []*candidate) []Candidate {
	out := make([]Candidate, len(cands))
	for i, c := range cands {
		out[i] = c.describe()
	}
	return out
}

func closeAll(cands []*candidate) {
	for _, c := range cands {
		c.h.Close()
	}
}

// appendNew appends the candidates not yet listed (by inode: a namespace several strategies found).
func appendNew(list, more []Candidate) []Candidate {
	for _, c := range more {
		if !slices.ContainsFunc(list, func(o Candidate) bool { return o.Inode == c.Inode }) {
			list = append(list, c)
		}
	}
	return list
}

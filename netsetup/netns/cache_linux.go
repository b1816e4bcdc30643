package netns

import "net/netip"

// maxProofs bounds the proof cache: well above the namespaces of a node (a few hundred). When it
// is full, an arbitrary entry is dropped: that namespace is proven again on its next Find.
const maxProofs = 4096

// cacheEntry is a pod's cached namespace: the cache's own reference, and the IPs it was found for.
type cacheEntry struct {
	h   *Handle
	ips []netip.Addr
}

// proofEntry is a namespace's proof, kept by its cookie: uid is the pod it is proven to be (normalized).
type proofEntry struct {
	uid   string
	proof Proof
}

// Forget drops and closes the cached namespace of podUID, if any, and forgets the proofs of its
// namespaces (call it when the pod is deleted).
func (f *Finder) Forget(podUID string) {
	uid := normalizeUID(podUID)
	f.mu.Lock()
	e := f.cache[podUID]
	delete(f.cache, podUID)
	for cookie, p := range f.proofs {
		if p.uid == uid {
			delete(f.proofs, cookie)
		}
	}
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

// proofOf returns the cached proof of the namespace with this cookie.
func (f *Finder) proofOf(cookie uint64) (proofEntry, bool) {
	if !f.opts.Cache || cookie == 0 {
		return proofEntry{}, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.proofs[cookie]
	return p, ok
}

// rememberProof keeps the proof that the namespace with this cookie is pod uid's.
func (f *Finder) rememberProof(cookie uint64, uid string, p Proof) {
	if !f.opts.Cache || cookie == 0 {
		return
	}
	p.Cached = false
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	if _, ok := f.proofs[cookie]; !ok && len(f.proofs) >= maxProofs {
		for k := range f.proofs {
			delete(f.proofs, k)
			break
		}
	}
	f.proofs[cookie] = proofEntry{uid: uid, proof: p}
}

// Proofs returns how many namespaces have a cached proof.
func (f *Finder) Proofs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.proofs)
}

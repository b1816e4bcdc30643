package netsetup

import (
	"container/list"
	"sync"
)

// Bounds of the canonical-state cache. A typical pod's state takes 2-3 KB, so 16 MiB holds
// thousands of distinct configurations (a node has a few); the largest the limits allow (8192
// rules in a family, about 1 MB) can never hold more than a sixteenth of it.
const (
	canonicalCacheBytes   = 16 << 20
	canonicalCacheEntries = 4096
)

// stateCache is a least-recently-used cache of canonical states, bounded by the total bytes the
// states retain (stateSize) and by their number. Safe for concurrent use.
type stateCache struct {
	maxBytes, maxEntries int

	mu    sync.Mutex
	bytes int
	order *list.List // of *cacheEntry, most recently used first
	byKey map[string]*list.Element
}

type cacheEntry struct {
	key   string
	state State
	size  int
}

func newStateCache(maxBytes, maxEntries int) *stateCache {
	return &stateCache{maxBytes: maxBytes, maxEntries: maxEntries, order: list.New(), byKey: map[string]*list.Element{}}
}

// get returns the state cached under key, and marks it most recently used.
func (c *stateCache) get(key string) (State, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*cacheEntry).state, true
}

// put caches st under key, evicting the least recently used states until both bounds hold. A
// state larger than the whole cache is not cached.
func (c *stateCache) put(key string, st State) {
	size := len(key) + stateSize(st)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		c.remove(el)
	}
	if size > c.maxBytes {
		return
	}
	for c.order.Len() > 0 && (c.bytes+size > c.maxBytes || c.order.Len() >= c.maxEntries) {
		c.remove(c.order.Back())
	}
	c.byKey[key] = c.order.PushFront(&cacheEntry{key: key, state: st, size: size})
	c.bytes += size
}

func (c *stateCache) remove(el *list.Element) {
	e := c.order.Remove(el).(*cacheEntry)
	delete(c.byKey, e.key)
	c.bytes -= e.size
}

// usage returns the bytes and the number of states cached.
func (c *stateCache) usage() (bytes, entries int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes, c.order.Len()
}

// Approximate per-object overheads (Go's map buckets, string and slice headers), so that a
// state of many short rules is not under-counted.
const (
	mapEntryOverhead = 48
	stringOverhead   = 16
)

// stateSize estimates the bytes st retains: its strings plus per-element overheads.
func stateSize(st State) int {
	n := 0
	for table, t := range st {
		n += len(table) + mapEntryOverhead + 2*mapEntryOverhead
		for _, chains := range []map[string][]string{t.Chains, t.BuiltIn} {
			for name, rules := range chains {
				n += len(name) + mapEntryOverhead + 3*8 // the rules slice header
				for _, r := range rules {
					n += len(r) + stringOverhead
				}
			}
		}
	}
	return n
}

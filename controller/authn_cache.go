package controller

import (
	"container/list"
	"sync"
	"time"
)

// reviewCache holds review outcomes until they expire, at most max of them: when full, the one
// stored first goes.
type reviewCache struct {
	max   int
	now   func() time.Time
	mu    sync.Mutex
	order *list.List // of *cachedReview, oldest first
	byKey map[string]*list.Element
}

type cachedReview struct {
	key     string
	res     review
	expires time.Time
}

func newReviewCache(limit int, now func() time.Time) *reviewCache {
	if now == nil {
		now = time.Now
	}
	return &reviewCache{max: limit, now: now, order: list.New(), byKey: map[string]*list.Element{}}
}

func (c *reviewCache) get(key string) (review, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[key]
	if !ok {
		return review{}, false
	}
	cr := e.Value.(*cachedReview)
	if !c.now().Before(cr.expires) {
		c.remove(e)
		return review{}, false
	}
	return cr.res, true
}

func (c *reviewCache) put(key string, res review, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		c.remove(e)
	}
	for c.order.Len() >= c.max {
		c.remove(c.order.Front())
	}
	c.byKey[key] = c.order.PushBack(&cachedReview{key: key, res: res, expires: c.now().Add(ttl)})
}

func (c *reviewCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

func (c *reviewCache) remove(e *list.Element) {
	c.order.Remove(e)
	delete(c.byKey, e.Value.(*cachedReview).key)
}

package netsetup

import (
	"fmt"
	"strings"
	"testing"
)

// bigState is a state of n rules of about 60 bytes in one of our chains.
func bigState(n int) State {
	rules := make([]string, n)
	for i := range rules {
		rules[i] = fmt.Sprintf("-d 10.%d.%d.0/24 -i net%d -j ISTIO_REDIRECT -m comment x", i/256%256, i%256, i%32)
	}
	return State{"nat": {Chains: map[string][]string{"ISTIO_OUTPUT": rules}, BuiltIn: map[string][]string{}}}
}

func TestStateSize(t *testing.T) {
	st, err := ParseSave(saved)
	if err != nil {
		t.Fatal(err)
	}
	small := stateSize(st)
	if small < len(strings.Join(st["nat"].Chains["ISTIO_OUTPUT"], "")) || small > 4096 {
		t.Fatalf("size of the sample state: %d", small)
	}
	// A state of 8192 rules (MaxRules) retains at least its text, and is counted so.
	big := bigState(8192)
	text := 0
	for _, r := range big["nat"].Chains["ISTIO_OUTPUT"] {
		text += len(r)
	}
	if got := stateSize(big); got < text || got > 2*text {
		t.Fatalf("8192 rules of %d bytes: size %d", text, got)
	}
}

// TestStateCacheLRUByBytes: the cache evicts the least recently used states to stay within its
// bytes, a lookup refreshes a state, a state larger than the cache is not cached, and replacing a
// key does not count it twice.
func TestStateCacheLRUByBytes(t *testing.T) {
	one := stateSize(bigState(100)) + len("a")
	c := newStateCache(3*one, 100)
	for _, k := range []string{"a", "b", "c"} {
		c.put(k, bigState(100))
	}
	if b, n := c.usage(); b != 3*one || n != 3 {
		t.Fatalf("usage %d bytes, %d states; want %d, 3", b, n, 3*one)
	}
	if _, ok := c.get("a"); !ok { // a is now the most recent; b the least
		t.Fatal("a missing")
	}
	c.put("d", bigState(100))
	if _, ok := c.get("b"); ok {
		t.Fatal("b, the least recently used, was not evicted")
	}
	for _, k := range []string{"a", "c", "d"} {
		if _, ok := c.get(k); !ok {
			t.Fatalf("%s evicted", k)
		}
	}
	// A state the size of two evicts two.
	c.put("e", bigState(200))
	if b, n := c.usage(); b > 3*one || n != 2 {
		t.Fatalf("after a double-size state: %d bytes (max %d), %d states", b, 3*one, n)
	}
	c.put("e", bigState(200))
	if b, n := c.usage(); b > 3*one || n != 2 {
		t.Fatalf("after replacing: %d bytes, %d states", b, n)
	}
	c.put("huge", bigState(1000))
	if _, ok := c.get("huge"); ok {
		t.Fatal("a state larger than the cache was cached")
	}
	if _, ok := c.get("e"); !ok {
		t.Fatal("caching nothing evicted e")
	}
}

func TestStateCacheEntries(t *testing.T) {
	c := newStateCache(1<<30, 3)
	for i := range 10 {
		c.put(fmt.Sprint(i), bigState(1))
	}
	if _, n := c.usage(); n != 3 {
		t.Fatalf("%d states, want 3", n)
	}
	for _, k := range []string{"7", "8", "9"} {
		if _, ok := c.get(k); !ok {
			t.Fatalf("%s evicted", k)
		}
	}
}

// TestCanonicalCacheBounded: with the Applier's bounds, states of the largest allowed size (MaxRules
// rules) keep the cache within canonicalCacheBytes: the old cache would have held 4096 of them
// (over 2 GB).
func TestCanonicalCacheBounded(t *testing.T) {
	c := newStateCache(canonicalCacheBytes, canonicalCacheEntries)
	big := bigState(8192)
	for i := range 100 {
		c.put(fmt.Sprintf("nft/ipv4/%064d", i), big)
	}
	b, n := c.usage()
	if b > canonicalCacheBytes || n < 8 || n >= 100 {
		t.Fatalf("%d states of 8192 rules take %d bytes (bound %d)", n, b, canonicalCacheBytes)
	}
	t.Logf("%d states of 8192 rules: %d bytes", n, b)
}

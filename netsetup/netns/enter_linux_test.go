package netns

import (
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
)

func threadInode(t *testing.T) uint64 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// Do nested in Do runs in the inner namespace and leaves the outer one's thread where it was;
// after many concurrent calls every thread of the process is back in its own namespace.
func TestDoNestedAndConcurrent(t *testing.T) {
	testutil.RequireRoot(t)
	a, b := newNamed(t), newNamed(t)
	ha, err := Open(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Close()
	hb, err := Open(b.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	var st unix.Stat_t
	if err := unix.Fstat(home, &st); err != nil {
		t.Fatal(err)
	}
	self := st.Ino

	var outerBefore, inner, outerAfter uint64
	if err := ha.Do(func() error {
		outerBefore = threadInode(t)
		err := hb.Do(func() error { inner = threadInode(t); return nil })
		outerAfter = threadInode(t)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if outerBefore != ha.Inode() || inner != hb.Inode() || outerAfter != ha.Inode() {
		t.Errorf("namespaces outer %d, inner %d, outer after %d; want %d, %d, %d",
			outerBefore, inner, outerAfter, ha.Inode(), hb.Inode(), ha.Inode())
	}

	var wg sync.WaitGroup
	for i := range 64 {
		h := ha
		if i%2 == 1 {
			h = hb
		}
		wg.Go(func() {
			var got uint64
			if err := h.Do(func() error { got = threadInode(t); return nil }); err != nil || got != h.Inode() {
				t.Errorf("Do: thread in %d (%v), want %d", got, err, h.Inode())
			}
			if now := threadInode(t); now != self {
				t.Errorf("after Do, a goroutine runs in namespace %d, want the process's %d", now, self)
			}
		})
	}
	wg.Wait()
	// A plain goroutine on any thread is in the process's namespace.
	for range 16 {
		done := make(chan uint64)
		go func() { done <- threadInode(t) }()
		if got := <-done; got != self {
			t.Errorf("goroutine in namespace %d, want %d", got, self)
		}
	}
}

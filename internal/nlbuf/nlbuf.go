// Package nlbuf lends receive buffers to netlink sockets. A dump is read in pieces of up to 32 KiB
// (the kernel's cap on one dump message), so a 64 KiB buffer always holds one; lending them
// instead of allocating one per socket keeps each apply from zeroing and page-faulting in fresh
// heap memory.
package nlbuf

import "sync"

// Size is the length of every buffer Get returns.
const Size = 64 << 10

var pool = sync.Pool{New: func() any { b := make([]byte, Size); return &b }}

// Get returns a buffer of Size bytes; its contents are unspecified.
func Get() *[]byte { return pool.Get().(*[]byte) }

// Put returns b to the pool; the caller must not use it afterwards.
func Put(b *[]byte) {
	if b != nil && len(*b) == Size {
		pool.Put(b)
	}
}

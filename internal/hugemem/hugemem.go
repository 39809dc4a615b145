// Package hugemem allocates the large buffers of a run (sets read whole,
// batches, cached activations, graph outputs, pruning states) backed by
// transparent huge pages where Linux leaves that to the program (THP
// "madvise"). A first touch of a 4 KB page is a page fault, and in a
// virtual machine a dear one (on the lab's machine about 12 µs, 3 ms per
// megabyte); a 2 MB huge page is one fault for 512 of them.
package hugemem

import "unsafe"

// Huge is the size of a huge page on the machines this package advises.
const Huge = 2 << 20

// minSize is the smallest buffer given huge pages of its own: from a
// megabyte on, one huge page costs less than the small pages it holds,
// even half empty.
const minSize = 1 << 20

// Make returns a zeroed slice of n values. A slice of a megabyte or more
// starts on a huge-page boundary and is advised onto huge pages up to the
// end of its last one, so none of its memory is touched in small pages;
// its memory use is rounded up to whole huge pages.
func Make[T any](n int) []T {
	sz := int(unsafe.Sizeof(*new(T)))
	size := n * sz
	if size < minSize || sz == 0 || Huge%sz != 0 {
		return make([]T, n)
	}
	span := (size + Huge - 1) &^ (Huge - 1)
	// Room to start on a boundary: the part before it is never touched.
	x := make([]T, (span+Huge)/sz)
	p := uintptr(unsafe.Pointer(unsafe.SliceData(x)))
	off := int((p+Huge-1)&^(Huge-1)-p) / sz
	x = x[off : off+span/sz]
	advise(x)
	return x[:n:n]
}

// Grow returns b with length n, reallocated (with Make) only when too
// small; its values are left as they are.
func Grow[T any](b []T, n int) []T {
	if cap(b) < n {
		return Make[T](n)
	}
	return b[:n]
}

package hugemem

import (
	"syscall"
	"unsafe"
)

// advise asks Linux to back the huge pages x covers with huge pages. It
// is advice: an error changes nothing but the speed.
func advise[T any](x []T) {
	size := len(x) * int(unsafe.Sizeof(*new(T)))
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), size)
	p := uintptr(unsafe.Pointer(&b[0]))
	off := int((p+Huge-1)&^(Huge-1) - p)
	if off >= len(b) {
		return
	}
	n := (len(b) - off) &^ (Huge - 1)
	if n > 0 {
		_ = syscall.Madvise(b[off:off+n], syscall.MADV_HUGEPAGE)
	}
}

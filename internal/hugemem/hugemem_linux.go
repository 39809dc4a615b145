package hugemem

import (
	"syscall"
	"unsafe"
)

// advise asks Linux to back the 2 MB pages x covers with huge pages. It
// is advice: an error changes nothing but the speed.
func advise[T any](x []T) {
	const huge = 2 << 20
	size := len(x) * int(unsafe.Sizeof(*new(T)))
	if size < 2*huge {
		return
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), size)
	p := uintptr(unsafe.Pointer(&b[0]))
	off := int((p+huge-1)&^(huge-1) - p)
	n := (len(b) - off) &^ (huge - 1)
	_ = syscall.Madvise(b[off:off+n], syscall.MADV_HUGEPAGE)
}

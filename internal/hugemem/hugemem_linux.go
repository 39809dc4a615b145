package hugemem

import (
	"syscall"
	"unsafe"
)

// advise asks Linux to back x, whole huge pages as Make lays them out,
// with huge pages. It is advice: an error changes nothing but the speed.
func advise[T any](x []T) {
	size := len(x) * int(unsafe.Sizeof(*new(T)))
	_ = syscall.Madvise(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), size), syscall.MADV_HUGEPAGE)
}

// Package h5 adds to gonum.org/v1/hdf5 the few things badprune needs that it
// lacks: quiet, read-only opening with errors a user can act on, reads of a
// hyperslab converted by the library to float32 or float64, string
// attributes (fixed-length and variable-length), and the file offset of a
// contiguous dataset, so a model can be patched in place.
package h5

// #cgo pkg-config: hdf5
// #include <stdlib.h>
// #include <string.h>
// #include <hdf5.h>
//
// static void bp_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
//
// static herr_t bp_read(hid_t ds, int native, int rank, const hsize_t *off,
//                       const hsize_t *cnt, void *buf) {
//   hid_t mt = native == 0 ? H5T_NATIVE_FLOAT : native == 1 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_UINT8;
//   hid_t fs = H5Dget_space(ds);
//   if (fs < 0) return -1;
//   herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
//   hid_t ms = rc < 0 ? -1 : H5Screate_simple(rank, cnt, NULL);
//   if (ms >= 0) {
//     rc = H5Dread(ds, mt, ms, fs, H5P_DEFAULT, buf);
//     H5Sclose(ms);
//   } else rc = -1;
//   H5Sclose(fs);
//   return rc;
// }
//
// // bp_attr_strings reads a string attribute (scalar or 1-D, fixed or
// // variable length) into one buffer of NUL-separated strings. Returns the
// // count, or -1 on error, -2 if the attribute is not a string.
// static long bp_attr_strings(hid_t obj, const char *name, char **out, size_t *outlen) {
//   hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
//   if (a < 0) return -1;
//   hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
//   long n = -1;
//   if (ft < 0 || sp < 0) goto done;
//   hssize_t np = H5Sget_simple_extent_npoints(sp);
//   if (np < 0) goto done;
//   // h5py writes an empty list as an empty float array.
//   if (np == 0) { n = 0; *out = malloc(1); *outlen = 0; goto done; }
//   if (H5Tget_class(ft) != H5T_STRING) { n = -2; goto done; }
//   if (H5Tis_variable_str(ft) > 0) {
//     char **v = calloc(np ? np : 1, sizeof(char *));
//     hid_t mt = H5Tcopy(H5T_C_S1);
//     H5Tset_size(mt, H5T_VARIABLE);
//     H5Tset_cset(mt, H5Tget_cset(ft));
//     if (H5Aread(a, mt, v) >= 0) {
//       size_t tot = 0;
//       for (hssize_t i = 0; i < np; i++) tot += (v[i] ? strlen(v[i]) : 0) + 1;
//       char *b = malloc(tot ? tot : 1), *p = b;
//       for (hssize_t i = 0; i < np; i++) {
//         size_t l = v[i] ? strlen(v[i]) : 0;
//         memcpy(p, v[i] ? v[i] : "", l); p[l] = 0; p += l + 1;
//       }
//       *out = b; *outlen = tot; n = np;
//       H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, v);
//     }
//     H5Tclose(mt);
//     free(v);
//   } else {
//     size_t sz = H5Tget_size(ft);
//     char *raw = calloc(np * sz + 1, 1);
//     if (H5Aread(a, ft, raw) >= 0) {
//       char *b = malloc(np * (sz + 1) + 1), *p = b;
//       for (hssize_t i = 0; i < np; i++) {
//         size_t l = strnlen(raw + i * sz, sz);
//         memcpy(p, raw + i * sz, l); p[l] = 0; p += l + 1;
//       }
//       *out = b; *outlen = p - b; n = np;
//     }
//     free(raw);
//   }
// done:
//   if (ft >= 0) H5Tclose(ft);
//   if (sp >= 0) H5Sclose(sp);
//   H5Aclose(a);
//   return n;
// }
//
// static int bp_attr_exists(hid_t obj, const char *name) { return H5Aexists(obj, name) > 0; }
//
// static long long bp_contiguous_offset(hid_t ds) {
//   hid_t pl = H5Dget_create_plist(ds);
//   if (pl < 0) return -1;
//   H5D_layout_t l = H5Pget_layout(pl);
//   H5Pclose(pl);
//   if (l != H5D_CONTIGUOUS) return -1;
//   haddr_t a = H5Dget_offset(ds);
//   return a == HADDR_UNDEF ? -1 : (long long)a;
// }
//
// // bp_write_strings writes a 1-D attribute of fixed-length strings, NUL
// // padded to the longest (as h5py writes numpy 'S' arrays).
// static int bp_write_strings(hid_t obj, const char *name, const char *buf, size_t n, size_t width) {
//   hsize_t dims[1] = {n};
//   hid_t sp = H5Screate_simple(1, dims, NULL);
//   hid_t t;
//   if (n) {
//     t = H5Tcopy(H5T_C_S1);
//     H5Tset_size(t, width ? width : 1);
//     H5Tset_strpad(t, H5T_STR_NULLPAD);
//   } else {
//     t = H5Tcopy(H5T_NATIVE_DOUBLE); // h5py's empty list
//   }
//   hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
//   int rc = a < 0 ? -1 : (n ? H5Awrite(a, t, buf) : 0);
//   if (a >= 0) H5Aclose(a);
//   H5Tclose(t); H5Sclose(sp);
//   return rc;
// }
//
// // bp_write_vstring writes a scalar variable-length UTF-8 string attribute
// // (as h5py writes a Python str).
// static int bp_write_vstring(hid_t obj, const char *name, const char *s) {
//   hid_t sp = H5Screate(H5S_SCALAR);
//   hid_t t = H5Tcopy(H5T_C_S1);
//   H5Tset_size(t, H5T_VARIABLE);
//   H5Tset_cset(t, H5T_CSET_UTF8);
//   hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
//   int rc = a < 0 ? -1 : H5Awrite(a, t, &s);
//   if (a >= 0) H5Aclose(a);
//   H5Tclose(t); H5Sclose(sp);
//   return rc;
// }
//
// // bp_type_info describes a dataset's element type; std reports whether it
// // is one of the standard integer or IEEE float types (a damaged file can
// // declare a float of billions of bits, which the library then converts
// // forever).
// static int bp_type_info(hid_t ds, int *cls, size_t *size, int *sign, int *order, int *std) {
//   hid_t t = H5Dget_type(ds);
//   if (t < 0) return -1;
//   *cls = H5Tget_class(t); *size = H5Tget_size(t);
//   *sign = *cls == H5T_INTEGER ? H5Tget_sign(t) : -1;
//   *order = H5Tget_order(t);
//   hid_t stds[] = {H5T_STD_I8LE, H5T_STD_I8BE, H5T_STD_U8LE, H5T_STD_U8BE,
//     H5T_STD_I16LE, H5T_STD_I16BE, H5T_STD_U16LE, H5T_STD_U16BE,
//     H5T_STD_I32LE, H5T_STD_I32BE, H5T_STD_U32LE, H5T_STD_U32BE,
//     H5T_STD_I64LE, H5T_STD_I64BE, H5T_STD_U64LE, H5T_STD_U64BE,
//     H5T_IEEE_F32LE, H5T_IEEE_F32BE, H5T_IEEE_F64LE, H5T_IEEE_F64BE};
//   *std = 0;
//   for (size_t i = 0; i < sizeof(stds) / sizeof(stds[0]); i++)
//     if (H5Tequal(t, stds[i]) > 0) { *std = 1; break; }
//   H5Tclose(t);
//   return 0;
// }
import "C"

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"gonum.org/v1/hdf5"

	"badprune/internal/guard"
)

// Locked runs fn, which calls the HDF5 library, on one OS thread with the
// library's error printing off. HDF5 keeps that setting per thread, and it
// prints its error stack to stderr by default; badprune reports errors
// itself, once.
//
// A call that has not returned after Patience is taken to be stuck in the
// library (a damaged file can make it loop for ever, found by fuzzing):
// the process ends through guard.Hung, naming the file.
func Locked(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.bp_quiet()
	t := time.AfterFunc(Patience, func() { guard.Hung(Patience) })
	defer t.Stop()
	return fn()
}

// Patience bounds one call into the library: far more than any read or
// write of badprune's takes, on any disk. BADPRUNE_HDF5_PATIENCE (a Go
// duration) changes it, for tests.
var Patience = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("BADPRUNE_HDF5_PATIENCE")); err == nil && d > 0 {
		return d
	}
	return 2 * time.Minute
}()

// hdf5Signature starts every HDF5 file (at offset 0 for the files we read).
const hdf5Signature = "\x89HDF\r\n\x1a\n"

// The errors of Open for a file that is not HDF5, or is damaged.
var (
	ErrNotHDF5 = errors.New("not an HDF5 file")
	ErrDamaged = errors.New("damaged or truncated HDF5 file")
)

// Open opens an HDF5 file read-only, with errors that say what is wrong:
// missing, unreadable, not HDF5, or damaged.
func Open(path string) (*hdf5.File, error) {
	guard.Reading(path)
	return OpenUnwatched(path)
}

// OpenUnwatched is Open without telling a crash supervisor that path is
// being read: for a temporary copy of the file the user named.
func OpenUnwatched(path string) (*hdf5.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, errors.Unwrap(err) // os adds the path; callers add it once
	}
	sig := make([]byte, len(hdf5Signature))
	_, err = io.ReadFull(f, sig)
	info, _ := f.Stat()
	f.Close()
	if info != nil && info.IsDir() {
		return nil, errors.New("is a directory, not an HDF5 file")
	}
	if err != nil || string(sig) != hdf5Signature {
		return nil, ErrNotHDF5
	}
	h, err := hdf5.OpenFile(path, hdf5.F_ACC_RDONLY)
	if err != nil {
		return nil, ErrDamaged
	}
	return h, nil
}

// Class is the kind of numbers a dataset holds.
type Class int

const (
	Other Class = iota
	Int
	Uint
	Float
)

// Type describes a dataset's element type.
type Type struct {
	Class     Class
	Size      int // bytes per element
	BigEndian bool
}

func (t Type) String() string {
	switch t.Class {
	case Int:
		return fmt.Sprintf("int%d", 8*t.Size)
	case Uint:
		return fmt.Sprintf("uint%d", 8*t.Size)
	case Float:
		return fmt.Sprintf("float%d", 8*t.Size)
	}
	return "non-numeric"
}

// TypeOf reports the element type of ds.
func TypeOf(ds *hdf5.Dataset) (Type, error) {
	var cls, sign, order, std C.int
	var size C.size_t
	if C.bp_type_info(C.hid_t(ds.ID()), &cls, &size, &sign, &order, &std) < 0 {
		return Type{}, errors.New("cannot read the element type")
	}
	t := Type{Size: int(size), BigEndian: order == C.H5T_ORDER_BE}
	if std == 0 {
		return t, nil // Other: not a type badprune reads
	}
	switch cls {
	case C.H5T_INTEGER:
		t.Class = Int
		if sign == C.H5T_SGN_NONE {
			t.Class = Uint
		}
	case C.H5T_FLOAT:
		t.Class = Float
	}
	return t, nil
}

// Dims reports the shape of ds.
func Dims(ds *hdf5.Dataset) ([]int, error) {
	sp := ds.Space()
	if sp == nil {
		return nil, errors.New("cannot read the shape")
	}
	defer sp.Close()
	d, _, err := sp.SimpleExtentDims()
	if err != nil {
		return nil, errors.New("cannot read the shape")
	}
	out := make([]int, len(d))
	for i, v := range d {
		out[i] = int(v)
	}
	return out, nil
}

func read(ds *hdf5.Dataset, native C.int, off, cnt []int, buf unsafe.Pointer, n int) error {
	if len(off) != len(cnt) || len(off) == 0 {
		return errors.New("h5: bad hyperslab")
	}
	coff := make([]C.hsize_t, len(off))
	ccnt := make([]C.hsize_t, len(cnt))
	total := 1
	for i := range off {
		coff[i], ccnt[i] = C.hsize_t(off[i]), C.hsize_t(cnt[i])
		total *= cnt[i]
	}
	if total > n {
		return fmt.Errorf("h5: buffer of %d for %d values", n, total)
	}
	if total == 0 {
		return nil
	}
	if C.bp_read(C.hid_t(ds.ID()), native, C.int(len(off)), &coff[0], &ccnt[0], buf) < 0 {
		return errors.New("read failed (damaged or truncated file?)")
	}
	return nil
}

// ReadFloat32 reads the hyperslab at off of size cnt (row-major) into dst,
// converting from the stored type.
func ReadFloat32(ds *hdf5.Dataset, off, cnt []int, dst []float32) error {
	if len(dst) == 0 {
		return read(ds, 0, off, cnt, nil, 0)
	}
	return read(ds, 0, off, cnt, unsafe.Pointer(&dst[0]), len(dst))
}

// ReadUint8 is ReadFloat32 for uint8 values.
func ReadUint8(ds *hdf5.Dataset, off, cnt []int, dst []uint8) error {
	if len(dst) == 0 {
		return read(ds, 2, off, cnt, nil, 0)
	}
	return read(ds, 2, off, cnt, unsafe.Pointer(&dst[0]), len(dst))
}

// ReadFloat64 is ReadFloat32 for float64 values.
func ReadFloat64(ds *hdf5.Dataset, off, cnt []int, dst []float64) error {
	if len(dst) == 0 {
		return read(ds, 1, off, cnt, nil, 0)
	}
	return read(ds, 1, off, cnt, unsafe.Pointer(&dst[0]), len(dst))
}

// Object is an HDF5 file, group or dataset.
type Object interface{ ID() int64 }

// HasAttr reports whether obj has an attribute called name.
func HasAttr(obj Object, name string) bool {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return C.bp_attr_exists(C.hid_t(obj.ID()), cn) != 0
}

// StringsAttr reads a string attribute, scalar or 1-D, fixed or variable
// length; trailing NULs of fixed-length strings are dropped.
func StringsAttr(obj Object, name string) ([]string, error) {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var buf *C.char
	var n C.size_t
	cnt := C.bp_attr_strings(C.hid_t(obj.ID()), cn, &buf, &n)
	switch {
	case cnt == -2:
		return nil, fmt.Errorf("attribute %q is not a string", name)
	case cnt < 0:
		return nil, fmt.Errorf("cannot read attribute %q", name)
	}
	defer C.free(unsafe.Pointer(buf))
	if cnt == 0 {
		return []string{}, nil
	}
	raw := C.GoStringN(buf, C.int(n))
	parts := strings.Split(strings.TrimSuffix(raw, "\x00"), "\x00")
	if len(parts) != int(cnt) {
		return nil, fmt.Errorf("cannot read attribute %q", name)
	}
	return parts, nil
}

// StringAttr reads a scalar (or one-element) string attribute.
func StringAttr(obj Object, name string) (string, error) {
	s, err := StringsAttr(obj, name)
	if err != nil {
		return "", err
	}
	if len(s) != 1 {
		return "", fmt.Errorf("attribute %q holds %d strings, want 1", name, len(s))
	}
	return s[0], nil
}

// ContiguousOffset reports the byte offset of a contiguously stored
// dataset's data in its file, and false when it is chunked, compact or not
// yet allocated.
func ContiguousOffset(ds *hdf5.Dataset) (int64, bool) {
	off := C.bp_contiguous_offset(C.hid_t(ds.ID()))
	return int64(off), off >= 0
}

// WriteStringsAttr writes a 1-D attribute of fixed-length, NUL-padded
// strings, the form Keras gives layer_names and weight_names.
func WriteStringsAttr(obj Object, name string, vals []string) error {
	width := 1
	for _, v := range vals {
		width = max(width, len(v))
	}
	buf := make([]byte, width*len(vals)+1)
	for i, v := range vals {
		copy(buf[i*width:], v)
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	if C.bp_write_strings(C.hid_t(obj.ID()), cn, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(vals)), C.size_t(width)) < 0 {
		return fmt.Errorf("cannot write attribute %q", name)
	}
	return nil
}

// WriteStringAttr writes a scalar variable-length string attribute.
func WriteStringAttr(obj Object, name, val string) error {
	cn, cv := C.CString(name), C.CString(val)
	defer C.free(unsafe.Pointer(cn))
	defer C.free(unsafe.Pointer(cv))
	if C.bp_write_vstring(C.hid_t(obj.ID()), cn, cv) < 0 {
		return fmt.Errorf("cannot write attribute %q", name)
	}
	return nil
}

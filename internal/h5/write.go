package h5

// #include <stdlib.h>
// #include <hdf5.h>
//
// static hid_t bp_type(int t) {
//   switch (t) {
//   case 0: return H5T_NATIVE_UINT8;
//   case 1: return H5T_NATIVE_INT16;
//   case 2: return H5T_NATIVE_INT64;
//   case 3: return H5T_IEEE_F32LE;
//   case 4: return H5T_IEEE_F64LE;
//   case 5: return H5T_IEEE_F32BE;
//   case 6: return H5T_IEEE_F64BE;
//   }
//   return -1;
// }
//
// static hid_t bp_create_file(const char *path) {
//   hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
//   H5Pset_obj_track_times(fcpl, 0);
//   hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
//   H5Pclose(fcpl);
//   return f;
// }
//
// static hid_t bp_create_group(hid_t loc, const char *name) {
//   hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
//   H5Pset_obj_track_times(gcpl, 0);
//   hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
//   H5Pclose(gcpl);
//   return g;
// }
//
// static hid_t bp_create_dataset(hid_t loc, const char *name, int type, int rank,
//                                const hsize_t *dims, const hsize_t *chunk, int deflate) {
//   hid_t t = bp_type(type);
//   if (t < 0) return -1;
//   hid_t sp = H5Screate_simple(rank, dims, NULL);
//   hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
//   H5Pset_obj_track_times(dcpl, 0);
//   if (chunk) {
//     H5Pset_chunk(dcpl, rank, chunk);
//     if (deflate > 0) H5Pset_deflate(dcpl, deflate);
//   }
//   hid_t d = H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
//   H5Pclose(dcpl);
//   H5Sclose(sp);
//   return d;
// }
//
// static herr_t bp_write(hid_t ds, int rank, const hsize_t *off, const hsize_t *cnt, const float *buf) {
//   hid_t fs = H5Dget_space(ds);
//   if (fs < 0) return -1;
//   herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
//   hid_t ms = rc < 0 ? -1 : H5Screate_simple(rank, cnt, NULL);
//   if (ms >= 0) {
//     rc = H5Dwrite(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf);
//     H5Sclose(ms);
//   } else rc = -1;
//   H5Sclose(fs);
//   return rc;
// }
//
// static herr_t bp_close(hid_t id) {
//   return H5Iget_type(id) == H5I_FILE ? H5Fclose(id) : H5Oclose(id);
// }
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// Stored is the element type of a dataset to create.
type Stored int

const (
	StoreUint8 Stored = iota
	StoreInt16
	StoreInt64
	StoreFloat32
	StoreFloat64
	StoreFloat32BE
	StoreFloat64BE
)

// ParseStored names a stored type: uint8, int16, int64, float32, float64,
// float32be, float64be.
func ParseStored(s string) (Stored, error) {
	for i, n := range []string{"uint8", "int16", "int64", "float32", "float64", "float32be", "float64be"} {
		if s == n {
			return Stored(i), nil
		}
	}
	return 0, fmt.Errorf("unknown stored type %q", s)
}

// Node is a file, group or dataset being written. Objects are created
// without modification times, so the same content gives the same bytes.
type Node struct{ id C.hid_t }

// ID is the HDF5 identifier.
func (n Node) ID() int64 { return int64(n.id) }

// Create makes a new HDF5 file, replacing any file at path. Call it, and
// the methods of what it returns, inside Locked.
func Create(path string) (Node, error) {
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	id := C.bp_create_file(cp)
	if id < 0 {
		return Node{}, errors.New("cannot create the file")
	}
	return Node{id}, nil
}

// Group creates a group called name in n.
func (n Node) Group(name string) (Node, error) {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	id := C.bp_create_group(n.id, cn)
	if id < 0 {
		return Node{}, fmt.Errorf("cannot create group %q", name)
	}
	return Node{id}, nil
}

// Dataset creates a dataset of the given type and shape in n; with
// deflate > 0 it is chunked along the first axis (chunk rows per chunk) and
// compressed.
func (n Node) Dataset(name string, t Stored, dims []int, chunk, deflate int) (Node, error) {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	cd := make([]C.hsize_t, len(dims))
	cc := make([]C.hsize_t, len(dims))
	for i, d := range dims {
		cd[i], cc[i] = C.hsize_t(d), C.hsize_t(max(d, 1))
	}
	var chunkp *C.hsize_t
	if deflate > 0 && len(dims) > 0 && dims[0] > 0 {
		cc[0] = C.hsize_t(max(1, min(chunk, dims[0])))
		chunkp = &cc[0]
	}
	var dp *C.hsize_t
	if len(dims) > 0 {
		dp = &cd[0]
	}
	id := C.bp_create_dataset(n.id, cn, C.int(t), C.int(len(dims)), dp, chunkp, C.int(deflate))
	if id < 0 {
		return Node{}, fmt.Errorf("cannot create dataset %q", name)
	}
	return Node{id}, nil
}

// WriteDataset creates the dataset name of type t and shape dims in n,
// unchunked, and stores all of v (row-major) in it.
func (n Node) WriteDataset(name string, t Stored, dims []int, v []float32) error {
	ds, err := n.Dataset(name, t, dims, 0, 0)
	if err != nil {
		return err
	}
	defer ds.Close()
	return ds.Write(make([]int, len(dims)), dims, v)
}

// Write stores v (row-major, converted by the library from float32) into
// the hyperslab at off of size cnt.
func (n Node) Write(off, cnt []int, v []float32) error {
	total := 1
	co := make([]C.hsize_t, len(off))
	cc := make([]C.hsize_t, len(cnt))
	for i := range off {
		co[i], cc[i] = C.hsize_t(off[i]), C.hsize_t(cnt[i])
		total *= cnt[i]
	}
	if total != len(v) || len(off) == 0 {
		return fmt.Errorf("h5: %d values for a slab of %d", len(v), total)
	}
	if total == 0 {
		return nil
	}
	if C.bp_write(n.id, C.int(len(off)), &co[0], &cc[0], (*C.float)(unsafe.Pointer(&v[0]))) < 0 {
		return errors.New("write failed")
	}
	return nil
}

// Close closes the object.
func (n Node) Close() error {
	if C.bp_close(n.id) < 0 {
		return errors.New("close failed")
	}
	return nil
}

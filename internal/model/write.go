package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"gonum.org/v1/hdf5"

	"badprune/internal/atomicfile"
	"badprune/internal/h5"
)

// WriteCopy writes to dst a copy of the file m was loaded from in which the
// kernel and bias datasets of the named layers hold m's current weights.
// Every other byte stays as it was, so attributes, the model_config and the
// optimizer state survive and Keras loads the copy. A file read by a
// registered format is copied by that format (Format.WriteCopy). A .keras archive is
// copied entry by entry, in order and with the same names, every entry
// byte for byte but model.weights.h5, which is patched the same way. The
// source is only read. Without force an existing dst is an error.
func (m *Model) WriteCopy(dst string, force bool, layers ...string) error {
	if atomicfile.SameFile(m.Path, dst) {
		return fmt.Errorf("%s: refusing to overwrite the input model", dst)
	}
	if m.adapter != nil {
		return m.writeFormat(dst, force, layers)
	}
	kind, err := sniff(m.Path)
	if err != nil {
		return fmt.Errorf("%s: %w", m.Path, err)
	}
	if kind == zipFile {
		return m.writeArchive(dst, force, layers)
	}
	var patches []patch
	err = h5.Locked(func() error {
		f, err := h5.Open(m.Path)
		if err != nil {
			return err
		}
		defer f.Close()
		patches, err = m.patches(f, layers)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", m.Path, err)
	}
	out, err := atomicfile.Create(dst, force)
	if err != nil {
		return err
	}
	defer out.Abort()
	src, err := os.Open(m.Path)
	if err != nil {
		return fmt.Errorf("%s: %w", m.Path, errors.Unwrap(err))
	}
	_, err = io.Copy(out, src)
	src.Close()
	if err != nil {
		return fmt.Errorf("%s: copying %s: %w", dst, m.Path, err)
	}
	if err := applyPatches(out.File, patches); err != nil {
		return fmt.Errorf("%s: %w", dst, err)
	}
	return out.Commit()
}

// applyPatches writes the patches into f, a copy of the file they were
// located in.
func applyPatches(f *os.File, patches []patch) error {
	var chunked []patch
	for _, p := range patches {
		if p.offset < 0 {
			chunked = append(chunked, p)
			continue
		}
		if _, err := f.WriteAt(p.encode(), p.offset); err != nil {
			return err
		}
	}
	if len(chunked) == 0 {
		return nil
	}
	// Chunked or compressed weights have no single place in the file: let
	// the library rewrite them in the copy.
	if err := f.Sync(); err != nil {
		return err
	}
	return h5.Locked(func() error { return writeWithLibrary(f.Name(), chunked) })
}

type patch struct {
	path   string
	values []float32
	typ    h5.Type
	offset int64 // -1: not contiguous
}

func (p patch) encode() []byte {
	var order binary.ByteOrder = binary.LittleEndian
	if p.typ.BigEndian {
		order = binary.BigEndian
	}
	b := make([]byte, len(p.values)*p.typ.Size)
	for i, v := range p.values {
		if p.typ.Size == 8 {
			order.PutUint64(b[8*i:], math.Float64bits(float64(v)))
		} else {
			order.PutUint32(b[4*i:], math.Float32bits(v))
		}
	}
	return b
}

// patches locates the weight datasets of the layers in f, the file m's
// weights were read from.
func (m *Model) patches(f *hdf5.File, layers []string) ([]patch, error) {
	var out []patch
	for _, name := range layers {
		l := m.Layer(name)
		if l == nil {
			return nil, fmt.Errorf("no layer %q", name)
		}
		if l.KernelPath == "" {
			return nil, fmt.Errorf("layer %q has no weights", name)
		}
		items := []struct {
			path string
			v    []float32
		}{{l.KernelPath, l.Kernel}}
		if l.BiasPath != "" {
			items = append(items, struct {
				path string
				v    []float32
			}{l.BiasPath, l.Bias})
		}
		for _, it := range items {
			ds, err := f.OpenDataset(it.path)
			if err != nil {
				return nil, fmt.Errorf("dataset %q: cannot open", it.path)
			}
			t, err := h5.TypeOf(ds)
			if err == nil && (t.Class != h5.Float || (t.Size != 4 && t.Size != 8)) {
				err = fmt.Errorf("stored as %s", t)
			}
			off, ok := h5.ContiguousOffset(ds)
			ds.Close()
			if err != nil {
				return nil, fmt.Errorf("dataset %q: %w", it.path, err)
			}
			if !ok {
				off = -1
			}
			out = append(out, patch{path: it.path, values: it.v, typ: t, offset: off})
		}
	}
	return out, nil
}

func writeWithLibrary(path string, ps []patch) error {
	f, err := hdf5.OpenFile(path, hdf5.F_ACC_RDWR)
	if err != nil {
		return errors.New("cannot reopen the copy")
	}
	defer f.Close()
	for _, p := range ps {
		ds, err := f.OpenDataset(p.path)
		if err != nil {
			return fmt.Errorf("dataset %q: cannot open", p.path)
		}
		if p.typ.BigEndian {
			ds.Close()
			return fmt.Errorf("dataset %q: big-endian chunked weights are not supported", p.path)
		}
		// gonum's Write uses the dataset's own type for memory.
		if p.typ.Size == 8 {
			v := make([]float64, len(p.values))
			for i, x := range p.values {
				v[i] = float64(x)
			}
			err = ds.Write(&v)
		} else {
			v := append([]float32(nil), p.values...)
			err = ds.Write(&v)
		}
		ds.Close()
		if err != nil {
			return fmt.Errorf("dataset %q: write failed", p.path)
		}
	}
	return f.Flush(hdf5.F_SCOPE_GLOBAL)
}

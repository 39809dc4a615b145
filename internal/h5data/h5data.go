// Package h5data reads labelled image sets in the lab's HDF5 format: a
// dataset of images shaped (N, C, H, W) or (N, H, W, C) of uint8, float32 or
// float64 (or (N, H, W) for a model of one channel, as MNIST is stored),
// and a dataset of N integral labels of any numeric type. Images
// are read in batches (hyperslabs), converted to NHWC float32, so memory does
// not grow with N; for training a set is read whole (ReadAll), as bytes
// when its pixels are integers 0..255 (ReadBytes).
package h5data

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"gonum.org/v1/hdf5"

	"badprune/internal/guard"
	"badprune/internal/h5"
	"badprune/internal/hugemem"
	"badprune/internal/kernels"
	"badprune/internal/workpool"
)

// MaxSamples bounds the samples of a set: a damaged or hostile file can
// claim any size in a few bytes.
const MaxSamples = 50_000_000

// Options say where the data are and what they must fit.
type Options struct {
	DataKey  string // default "data"
	LabelKey string // default "label"
	// The model's input: images must be H x W x C (either layout).
	H, W, C int
	// Classes bounds the labels: 0 <= label < Classes (unchecked when 0).
	Classes int
	// Scale multiplies every pixel (0 means 1).
	Scale float32
	// Norm normalizes the scaled pixels.
	Norm Normalization
}

// Set is an open image set.
type Set struct {
	Path          string
	N             int
	H, W, C       int
	ChannelsFirst bool // stored as (N, C, H, W)
	Grayscale     bool // stored as (N, H, W): one channel, no channel axis
	Type          h5.Type
	Labels        []int

	scale float32
	norm  Normalization
	key   string
	f     *hdf5.File
	data  *hdf5.Dataset
}

// Open opens a set and checks its shapes, types and labels. Pixels are
// checked as they are read.
func Open(path string, opt Options) (*Set, error) {
	var s *Set
	err := h5.Locked(func() (err error) {
		s, err = open(path, opt)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func open(path string, opt Options) (*Set, error) {
	if opt.DataKey == "" {
		opt.DataKey = "data"
	}
	if opt.LabelKey == "" {
		opt.LabelKey = "label"
	}
	if opt.Scale == 0 {
		opt.Scale = 1
	}
	f, err := h5.Open(path)
	if err != nil {
		return nil, err
	}
	s := &Set{Path: path, f: f, scale: opt.Scale, norm: opt.Norm, key: opt.DataKey}
	if err := s.init(opt); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func openDataset(f *hdf5.File, key string, labels bool) (*hdf5.Dataset, error) {
	if !f.LinkExists(key) {
		return nil, &KeyError{Key: key, Labels: labels, Missing: true}
	}
	ds, err := f.OpenDataset(key)
	if err != nil {
		return nil, &KeyError{Key: key, Labels: labels}
	}
	return ds, nil
}

func (s *Set) init(opt Options) error {
	var err error
	if s.data, err = openDataset(s.f, opt.DataKey, false); err != nil {
		return err
	}
	if s.Type, err = h5.TypeOf(s.data); err != nil {
		return fmt.Errorf("dataset %q: %w", opt.DataKey, err)
	}
	switch {
	case s.Type.Class == h5.Uint && s.Type.Size == 1,
		s.Type.Class == h5.Float && (s.Type.Size == 4 || s.Type.Size == 8):
	default:
		return fmt.Errorf("dataset %q holds %s; want uint8, float32 or float64", opt.DataKey, s.Type)
	}
	dims, err := h5.Dims(s.data)
	if err != nil {
		return fmt.Errorf("dataset %q: %w", opt.DataKey, err)
	}
	h, w, c := opt.H, opt.W, opt.C
	if len(dims) == 3 && c == 1 {
		// (N, H, W) is (N, H, W, 1) without the axis.
		if dims[1] != h || dims[2] != w {
			return fmt.Errorf("dataset %q has shape %v; the model takes %dx%d images with 1 channel: want (N, %d, %d), (N, 1, %d, %d) or (N, %d, %d, 1)",
				opt.DataKey, dims, h, w, h, w, h, w, h, w)
		}
		s.Grayscale = true
		dims = append(dims, 1)
	}
	if len(dims) != 4 {
		if c == 1 {
			return fmt.Errorf("dataset %q has shape %v; want (N, C, H, W), (N, H, W, C) or, for one channel, (N, H, W)", opt.DataKey, dims)
		}
		return fmt.Errorf("dataset %q has shape %v; want (N, C, H, W) or (N, H, W, C)", opt.DataKey, dims)
	}
	s.N = dims[0]
	switch {
	case s.Grayscale:
	case h == 0: // no model to fit: trust a 3-channel axis
		s.ChannelsFirst = dims[1] <= 4 && dims[3] > 4
	case dims[1] == c && dims[2] == h && dims[3] == w:
		s.ChannelsFirst = true
	case dims[1] == h && dims[2] == w && dims[3] == c:
	default:
		return fmt.Errorf("dataset %q has shape %v; the model takes %dx%d images with %d channels: want (N, %d, %d, %d) or (N, %d, %d, %d)",
			opt.DataKey, dims, h, w, c, c, h, w, h, w, c)
	}
	if s.ChannelsFirst {
		s.C, s.H, s.W = dims[1], dims[2], dims[3]
	} else {
		s.H, s.W, s.C = dims[1], dims[2], dims[3]
	}
	if s.N == 0 {
		return fmt.Errorf("dataset %q is empty", opt.DataKey)
	}
	if s.N > MaxSamples {
		return fmt.Errorf("dataset %q claims %d samples, more than badprune reads (%d)", opt.DataKey, s.N, MaxSamples)
	}
	if err := s.norm.Check(s.C); err != nil {
		return err
	}
	return s.readLabels(opt)
}

func (s *Set) readLabels(opt Options) error {
	ds, err := openDataset(s.f, opt.LabelKey, true)
	if err != nil {
		return err
	}
	defer ds.Close()
	t, err := h5.TypeOf(ds)
	if err != nil {
		return fmt.Errorf("dataset %q: %w", opt.LabelKey, err)
	}
	if t.Class == h5.Other {
		return fmt.Errorf("dataset %q holds %s values; want numbers", opt.LabelKey, t)
	}
	dims, err := h5.Dims(ds)
	if err != nil {
		return fmt.Errorf("dataset %q: %w", opt.LabelKey, err)
	}
	n := 1
	for _, d := range dims {
		n *= d
	}
	if len(dims) == 0 || n != dims[0] {
		return fmt.Errorf("dataset %q has shape %v; want (N,)", opt.LabelKey, dims)
	}
	if n != s.N {
		return fmt.Errorf("%d labels in %q for %d images in %q", n, opt.LabelKey, s.N, opt.DataKey)
	}
	s.Labels = make([]int, n)
	const chunk = 1 << 16
	v := make([]float64, min(n, chunk))
	for lo := 0; lo < n; lo += chunk {
		k := min(chunk, n-lo)
		if err := h5.ReadFloat64(ds, []int{lo}, []int{k}, v[:k]); err != nil {
			return fmt.Errorf("dataset %q: %w", opt.LabelKey, err)
		}
		if err := s.checkLabels(opt, lo, v[:k]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Set) checkLabels(opt Options, lo int, v []float64) error {
	for j, x := range v {
		i := lo + j
		switch {
		case math.IsNaN(x) || math.IsInf(x, 0):
			return fmt.Errorf("dataset %q: label of sample %d is %v", opt.LabelKey, i, x)
		case x != math.Trunc(x):
			return fmt.Errorf("dataset %q: label of sample %d is %v, not an integer", opt.LabelKey, i, x)
		case x < 0 || (opt.Classes > 0 && x >= float64(opt.Classes)):
			return fmt.Errorf("dataset %q: label of sample %d is %v, outside the model's classes 0..%d", opt.LabelKey, i, x, opt.Classes-1)
		}
		s.Labels[i] = int(x)
	}
	return nil
}

// Close releases the file.
func (s *Set) Close() error {
	return h5.Locked(s.close)
}

func (s *Set) close() error {
	if s.data != nil {
		s.data.Close()
		s.data = nil
	}
	if s.f != nil {
		err := s.f.Close()
		s.f = nil
		return err
	}
	return nil
}

// ImageSize is the number of values of one image.
func (s *Set) ImageSize() int { return s.H * s.W * s.C }

// Buffer is scratch for Read, reused between calls.
type Buffer struct {
	u8  []uint8
	f32 []float32
	f64 []float64
}

// Read reads images [start, start+n) into dst as NHWC float32 times the
// scale, normalized. The library copies the stored values as they are (no
// conversion), and one pass converts, transposes and checks them: a
// non-finite pixel is an error naming the sample. buf may be nil.
func (s *Set) Read(start, n int, dst []float32, buf *Buffer) error {
	raw, err := s.readRaw(start, n, buf)
	if err != nil || n == 0 {
		return err
	}
	sz := s.ImageSize()
	if i := kernels.Convert(raw, n, s.C, s.H*s.W, s.ChannelsFirst, s.scale, dst[:n*sz]); i >= 0 {
		return fmt.Errorf("%s: dataset %q: sample %d has a non-finite pixel", s.Path, s.key, start+i)
	}
	s.norm.Apply(dst[:n*sz], s.C)
	return nil
}

// readRaw reads the stored values of images [start, start+n) into buf, as
// they are stored, and returns them ([]uint8, []float32 or []float64).
func (s *Set) readRaw(start, n int, buf *Buffer) (any, error) {
	if start < 0 || n < 0 || start+n > s.N {
		return nil, fmt.Errorf("%s: samples %d..%d outside 0..%d", s.Path, start, start+n-1, s.N-1)
	}
	if buf == nil {
		buf = &Buffer{}
	}
	sz := s.ImageSize()
	var cnt []int
	switch {
	case s.Grayscale:
		cnt = []int{n, s.H, s.W}
	case s.ChannelsFirst:
		cnt = []int{n, s.C, s.H, s.W}
	default:
		cnt = []int{n, s.H, s.W, s.C}
	}
	off := make([]int, len(cnt))
	off[0] = start
	var raw any
	guard.Reading(s.Path)
	err := h5.Locked(func() error {
		switch {
		case s.Type.Class == h5.Uint && s.Type.Size == 1:
			buf.u8 = hugemem.Grow(buf.u8, n*sz)
			raw = buf.u8
			return h5.ReadUint8(s.data, off, cnt, buf.u8)
		case s.Type.Size == 8:
			buf.f64 = hugemem.Grow(buf.f64, n*sz)
			raw = buf.f64
			return h5.ReadFloat64(s.data, off, cnt, buf.f64)
		default:
			buf.f32 = hugemem.Grow(buf.f32, n*sz)
			raw = buf.f32
			return h5.ReadFloat32(s.data, off, cnt, buf.f32)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("%s: dataset %q, samples %d..%d: %w", s.Path, s.key, start, start+n-1, err)
	}
	return raw, nil
}

// Batch is a run of consecutive samples.
type Batch struct {
	Start, N int
	X        []float32 // N NHWC images
	Labels   []int
}

// Stream reads the set in batches of at most size samples, reading the next
// batch while fn works on the current one, and calls fn on each in order.
// The batch's X is reused after fn returns.
func (s *Set) Stream(ctx context.Context, size int, fn func(Batch) error) error {
	return s.StreamWith(ctx, size, nil, fn)
}

// Batches is the memory Stream reads and converts batches into, kept for
// the next stream (of any set, with any batch size) so that a run
// streaming several sets touches it once: first touches of memory are
// page faults, dear in a virtual machine. A Batches serves one stream at
// a time; nil is new memory for each.
type Batches struct {
	x   [][]float32
	raw Buffer
}

// StreamWith is Stream in the memory of mem.
func (s *Set) StreamWith(ctx context.Context, size int, mem *Batches, fn func(Batch) error) error {
	return s.StreamHeld(ctx, size, 1, mem, func(b Batch, release func()) error {
		defer release()
		return fn(b)
	})
}

// StreamHeld is StreamWith for a consumer that works on batches after fn
// returns, on other goroutines: fn also gets release, to call when done
// with the batch's X (calls after the first do nothing). The consumer may
// hold hold batches unreleased while the reader still reads ahead; beyond
// that the reader waits for a release. fn is called on each batch in
// order, one at a time. mem may serve another stream once every batch of
// this one is released.
func (s *Set) StreamHeld(ctx context.Context, size, hold int, mem *Batches, fn func(b Batch, release func()) error) error {
	if size < 1 {
		return errors.New("h5data: batch size < 1")
	}
	hold = max(hold, 1)
	type item struct {
		b   Batch
		err error
	}
	if mem == nil {
		mem = &Batches{}
	}
	sz := s.ImageSize()
	const depth = 2
	free := make(chan []float32, depth+hold)
	for i := 0; i < depth+hold; i++ {
		if i == len(mem.x) {
			mem.x = append(mem.x, nil)
		}
		mem.x[i] = hugemem.Grow(mem.x[i], size*sz)
		free <- mem.x[i]
	}
	ready := make(chan item, depth)
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		// The reader must be done with the file before the caller closes it.
		cancel()
		for range ready {
		}
	}()
	go func() {
		defer close(ready)
		buf := &mem.raw
		for start := 0; start < s.N; start += size {
			var x []float32
			select {
			case x = <-free:
			case <-ctx.Done():
				return
			}
			n := min(size, s.N-start)
			err := s.Read(start, n, x, buf)
			select {
			case ready <- item{Batch{start, n, x[:n*sz], s.Labels[start : start+n]}, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for it := range ready {
		if it.err != nil {
			return it.err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var once sync.Once
		x := it.b.X[:cap(it.b.X)]
		if err := fn(it.b, func() { once.Do(func() { free <- x }) }); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// ReadAll reads every image of the set into memory (NHWC float32). Chunks
// go straight into the result, one reader per core: while one holds the
// library, the others convert what they read.
func (s *Set) ReadAll(ctx context.Context) ([]float32, error) {
	sz := s.ImageSize()
	x := hugemem.Make[float32](s.N * sz)
	err := s.chunks(ctx, func(start, n int, buf *Buffer) error {
		return s.Read(start, n, x[start*sz:(start+n)*sz], buf)
	})
	if err != nil {
		return nil, err
	}
	return x, nil
}

// errNotBytes stops ReadBytes at a pixel that is not an integer 0..255.
var errNotBytes = errors.New("not bytes")

// ReadBytes reads every image of the set into memory as its stored pixels
// (NHWC bytes) when each is an integer 0..255, as in image files and the
// lab's float64 sets: a quarter of ReadAll's memory, and on a machine where
// fresh memory is slow most of the reading. lut[c*256+b] is what pixel
// value b of channel c reads as, scaled and normalized: the float32 Read
// gives for it, bit for bit. ok is false, and nothing is kept, when some
// pixel is not such an integer (the caller then uses ReadAll).
func (s *Set) ReadBytes(ctx context.Context) (px []uint8, lut []float32, ok bool, err error) {
	sz := s.ImageSize()
	px = hugemem.Make[uint8](s.N * sz)
	err = s.chunks(ctx, func(start, n int, buf *Buffer) error {
		raw, err := s.readRaw(start, n, buf)
		if err != nil {
			return err
		}
		if !kernels.Narrow(raw, n, s.C, s.H*s.W, s.ChannelsFirst, px[start*sz:(start+n)*sz]) {
			return errNotBytes
		}
		return nil
	})
	if errors.Is(err, errNotBytes) {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, err
	}
	return px, s.byteValues(), true, nil
}

// byteValues is ReadBytes's table: every byte value in every channel put
// through Read's own conversion and normalization.
func (s *Set) byteValues() []float32 {
	raw := make([]uint8, 256*s.C) // one image of 256 pixels, NHWC
	for b := range 256 {
		for c := range s.C {
			raw[b*s.C+c] = uint8(b)
		}
	}
	v := make([]float32, 256*s.C)
	kernels.Convert(raw, 1, s.C, 256, false, s.scale, v)
	s.norm.Apply(v, s.C)
	lut := make([]float32, 256*s.C)
	for b := range 256 {
		for c := range s.C {
			lut[c*256+b] = v[b*s.C+c]
		}
	}
	return lut
}

// chunks calls read on consecutive runs of the set's samples, one reader
// per core taking the next run, until all are read or one fails: the
// error returned is that of the earliest run that failed.
func (s *Set) chunks(ctx context.Context, read func(start, n int, buf *Buffer) error) error {
	const chunk = 256
	var (
		next atomic.Int64
		mu   sync.Mutex
		errs error
		at   int // errs is the error of the earliest failed chunk, at
	)
	workpool.Split(workpool.Workers(), 1, func(lo, hi int) {
		var buf Buffer
		for {
			start := int(next.Add(chunk)) - chunk
			if start >= s.N {
				return
			}
			err := ctx.Err()
			if err == nil {
				err = read(start, min(chunk, s.N-start), &buf)
			}
			if err != nil {
				mu.Lock()
				if errs == nil || start < at {
					errs, at = err, start
				}
				mu.Unlock()
				next.Store(int64(s.N)) // the others stop at their next chunk
				return
			}
		}
	})
	return errs
}

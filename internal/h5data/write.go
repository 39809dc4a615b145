package h5data

import (
	"errors"
	"fmt"
	"math"
	"os"

	"badprune/internal/atomicfile"
	"badprune/internal/guard"
	"badprune/internal/h5"
)

// Storage chooses how Create stores a set.
type Storage struct {
	ChannelsFirst bool   // (N, C, H, W), the lab's layout
	Data          string // uint8, float32, float64 (or int16, float32be, ... to test readers)
	Label         string // float32, float64, uint8, int16, int64, ...
	Deflate       int    // 0: contiguous; 1-9: chunked and compressed
	DataKey       string // default "data"
	LabelKey      string // default "label"
}

// Writer fills a new set batch by batch. The file appears at its path only
// when Close succeeds.
type Writer struct {
	path, tmp    string
	n, h, w, c   int
	st           Storage
	integral     bool // pixels stored as integers: round and clamp
	f            h5.Node
	data, labels h5.Node
	open         bool
}

// Create starts a set of n images h x w x c at path. Without force an
// existing path is an error.
func Create(path string, n, h, w, c int, st Storage, force bool) (*Writer, error) {
	if st.DataKey == "" {
		st.DataKey = "data"
	}
	if st.LabelKey == "" {
		st.LabelKey = "label"
	}
	if st.Data == "" {
		st.Data = "uint8"
	}
	if st.Label == "" {
		st.Label = "float32"
	}
	if err := atomicfile.CheckFree(path, force); err != nil {
		return nil, err
	}
	dt, err := h5.ParseStored(st.Data)
	if err != nil {
		return nil, err
	}
	lt, err := h5.ParseStored(st.Label)
	if err != nil {
		return nil, err
	}
	wr := &Writer{path: path, n: n, h: h, w: w, c: c, st: st, integral: dt == h5.StoreUint8 || dt == h5.StoreInt16 || dt == h5.StoreInt64}
	wr.tmp = atomicfile.TempPath(path)
	dims := []int{n, h, w, c}
	if st.ChannelsFirst {
		dims = []int{n, c, h, w}
	}
	err = h5.Locked(func() error {
		var err error
		if wr.f, err = h5.Create(wr.tmp); err != nil {
			return err
		}
		wr.open = true
		if wr.data, err = wr.f.Dataset(st.DataKey, dt, dims, 64, st.Deflate); err != nil {
			return err
		}
		wr.labels, err = wr.f.Dataset(st.LabelKey, lt, []int{n}, 4096, st.Deflate)
		return err
	})
	if err != nil {
		wr.Abort()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return wr, nil
}

// Write stores images [start, start+k) from x (k NHWC images) and their
// labels.
func (wr *Writer) Write(start int, x []float32, labels []int) error {
	k := len(labels)
	sz := wr.h * wr.w * wr.c
	if len(x) != k*sz || start < 0 || start+k > wr.n {
		return errors.New("h5data: write outside the set")
	}
	if k == 0 {
		return nil
	}
	vals := make([]float32, len(x))
	hw := wr.h * wr.w
	for i := 0; i < k; i++ {
		for p := 0; p < hw; p++ {
			for ch := 0; ch < wr.c; ch++ {
				v := x[i*sz+p*wr.c+ch]
				if wr.integral {
					v = float32(math.Round(math.Min(math.Max(float64(v), 0), 255)))
				}
				if wr.st.ChannelsFirst {
					vals[i*sz+ch*hw+p] = v
				} else {
					vals[i*sz+p*wr.c+ch] = v
				}
			}
		}
	}
	cnt := []int{k, wr.h, wr.w, wr.c}
	if wr.st.ChannelsFirst {
		cnt = []int{k, wr.c, wr.h, wr.w}
	}
	lv := make([]float32, k)
	for i, l := range labels {
		lv[i] = float32(l)
	}
	err := h5.Locked(func() error {
		if err := wr.data.Write([]int{start, 0, 0, 0}, cnt, vals); err != nil {
			return err
		}
		return wr.labels.Write([]int{start}, []int{k}, lv)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", wr.path, err)
	}
	return nil
}

// Close finishes the file and moves it into place.
func (wr *Writer) Close() error {
	err := h5.Locked(func() error {
		wr.data.Close()
		wr.labels.Close()
		wr.open = false
		return wr.f.Close()
	})
	if err == nil {
		err = os.Rename(wr.tmp, wr.path)
	}
	if err != nil {
		os.Remove(wr.tmp)
	}
	guard.Done(wr.tmp)
	if err != nil {
		return fmt.Errorf("%s: %w", wr.path, err)
	}
	return nil
}

// Abort drops an unfinished file.
func (wr *Writer) Abort() {
	if wr.open {
		h5.Locked(func() error {
			if wr.data.ID() > 0 {
				wr.data.Close()
			}
			if wr.labels.ID() > 0 {
				wr.labels.Close()
			}
			wr.open = false
			return wr.f.Close()
		})
	}
	os.Remove(wr.tmp)
	guard.Done(wr.tmp)
}

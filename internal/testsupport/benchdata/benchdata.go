// Package benchdata writes lab-scale image sets for benchmarks: the lab's
// sizes, layout and dtypes, with images made by jittering a few real faces
// (shift, brightness, contrast, noise) so that pixel statistics and network
// activations look like the lab's.
package benchdata

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"

	"badprune/internal/h5data"
)

// Lab is the set sizes and dtypes of the lab's files.
var Lab = []Spec{
	{"cl/valid.h5", 11547, "float64", false},
	{"bd/bd_valid.h5", 11547, "float64", true},
	{"cl/test.h5", 12830, "float32", false},
	{"bd/bd_test.h5", 12830, "float32", true},
}

// Spec is one set to write.
type Spec struct {
	Path  string
	N     int
	Dtype string
	BD    bool // poisoned: images from the trigger faces, label 0
}

// Face is a source image (NHWC, 55x47x3, 0..255) and its label.
type Face struct {
	X     []float32
	Label int
}

// Jitter returns a variant of f: shifted up to 2 pixels, brightness and
// contrast changed by a few percent, Gaussian noise of 3 levels.
func Jitter(r *rand.Rand, f []float32, h, w int, dst []float32) {
	dy, dx := r.IntN(5)-2, r.IntN(5)-2
	gain := 0.9 + 0.2*r.Float64()
	bias := r.Float64()*20 - 10
	for y := 0; y < h; y++ {
		sy := min(max(y+dy, 0), h-1)
		for x := 0; x < w; x++ {
			sx := min(max(x+dx, 0), w-1)
			for c := 0; c < 3; c++ {
				v := float64(f[(sy*w+sx)*3+c])*gain + bias + r.NormFloat64()*3
				dst[(y*w+x)*3+c] = float32(math.Round(min(max(v, 0), 255)))
			}
		}
	}
}

// Write writes the sets under dir from the clean and poisoned source faces.
func Write(dir string, specs []Spec, clean, bd []Face, seed uint64) error {
	const h, w = 55, 47
	for i, s := range specs {
		src := clean
		if s.BD {
			src = bd
		}
		if len(src) == 0 {
			return fmt.Errorf("benchdata: no source faces for %s", s.Path)
		}
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		wr, err := h5data.Create(filepath.Join(dir, s.Path), s.N, h, w, 3,
			h5data.Storage{ChannelsFirst: true, Data: s.Dtype, Label: "float64"}, true)
		if err != nil {
			return err
		}
		const batch = 512
		x := make([]float32, batch*h*w*3)
		labels := make([]int, batch)
		for lo := 0; lo < s.N; lo += batch {
			n := min(batch, s.N-lo)
			for k := 0; k < n; k++ {
				f := src[r.IntN(len(src))]
				Jitter(r, f.X, h, w, x[k*h*w*3:(k+1)*h*w*3])
				labels[k] = f.Label
			}
			if err := wr.Write(lo, x[:n*h*w*3], labels[:n]); err != nil {
				wr.Abort()
				return err
			}
		}
		if err := wr.Close(); err != nil {
			return err
		}
	}
	return nil
}

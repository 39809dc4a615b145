package h5data_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"badprune/internal/h5"
	"badprune/internal/h5data"
	"badprune/internal/testsupport/fixture"
)

// TestGrayscale reads the same one-channel images stored as (N, H, W),
// (N, H, W, 1) and (N, 1, H, W): all read alike for a model of one channel.
func TestGrayscale(t *testing.T) {
	const n, h, w = 5, 7, 6
	pix := make([]float32, n*h*w)
	for i := range pix {
		pix[i] = float32((i * 37) % 256)
	}
	labels := []float32{0, 3, 9, 1, 2}
	dir := t.TempDir()
	write := func(name string, dims []int) string {
		path := filepath.Join(dir, name)
		err := fixture.WriteDatasets(path,
			fixture.Dataset{Name: "data", Type: h5.StoreUint8, Dims: dims, Vals: pix},
			fixture.Dataset{Name: "label", Type: h5.StoreInt64, Dims: []int{n}, Vals: labels})
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	opt := h5data.Options{H: h, W: w, C: 1, Classes: 10, Scale: 1.0 / 255}
	want := make([]float32, len(pix))
	for i, v := range pix {
		want[i] = v * (1.0 / 255)
	}
	cases := []struct {
		name          string
		dims          []int
		gray, chFirst bool
	}{
		{"nhw.h5", []int{n, h, w}, true, false},
		{"nhwc.h5", []int{n, h, w, 1}, false, false},
		{"nchw.h5", []int{n, 1, h, w}, false, true},
	}
	for _, tc := range cases {
		s, err := h5data.Open(write(tc.name, tc.dims), opt)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if s.N != n || s.H != h || s.W != w || s.C != 1 || s.Grayscale != tc.gray || s.ChannelsFirst != tc.chFirst {
			t.Errorf("%s: %d images %dx%dx%d, grayscale %v, channels first %v", tc.name, s.N, s.H, s.W, s.C, s.Grayscale, s.ChannelsFirst)
		}
		if !slices.Equal(s.Labels, []int{0, 3, 9, 1, 2}) {
			t.Errorf("%s: labels %v", tc.name, s.Labels)
		}
		for _, batch := range []int{1, 2, 5} {
			if got := readAll(t, s, batch); !slices.Equal(got, want) {
				t.Errorf("%s, batch %d: pixels differ from those written", tc.name, batch)
			}
		}
		// One image from the middle: the hyperslab starts at that sample.
		x := make([]float32, h*w)
		if err := s.Read(3, 1, x, nil); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(x, want[3*h*w:4*h*w]) {
			t.Errorf("%s: image 3 differs", tc.name)
		}
		all, err := s.ReadAll(context.Background())
		if err != nil || !slices.Equal(all, want) {
			t.Errorf("%s: ReadAll: %v", tc.name, err)
		}
		s.Close()
	}

	// (N, H, W) is one channel: refused for a model of three, and it must
	// have the model's size.
	nhw := filepath.Join(dir, "nhw.h5")
	errs := []struct {
		name string
		opt  h5data.Options
		want string
	}{
		{"3 channels", h5data.Options{H: h, W: w, C: 3}, "want (N, C, H, W) or (N, H, W, C)"},
		{"other size", h5data.Options{H: h + 1, W: w, C: 1}, "the model takes 8x6 images with 1 channel: want (N, 8, 6), (N, 1, 8, 6) or (N, 8, 6, 1)"},
		{"no model", h5data.Options{}, "want (N, C, H, W) or (N, H, W, C)"},
	}
	for _, tc := range errs {
		_, err := h5data.Open(nhw, tc.opt)
		if err == nil || !strings.HasPrefix(err.Error(), nhw+": ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to name the file and say %q", tc.name, err, tc.want)
		}
	}
	// A 2-D dataset is still refused for a model of one channel.
	flat := write("flat.h5", []int{n, h * w})
	if _, err := h5data.Open(flat, opt); err == nil || !strings.Contains(err.Error(), "for one channel, (N, H, W)") {
		t.Errorf("2-D data: error %v", err)
	}
}

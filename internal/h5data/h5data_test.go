package h5data_test

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"badprune/internal/h5"
	"badprune/internal/h5data"
	"badprune/internal/testsupport/fixture"
)

const tiny = "../../testdata/tiny/"

func lab(classes int) h5data.Options {
	return h5data.Options{H: 55, W: 47, C: 3, Classes: classes}
}

func readAll(t *testing.T, s *h5data.Set, batch int, mem *h5data.Batches) []float32 {
	t.Helper()
	var all []float32
	next := 0
	err := s.StreamWith(context.Background(), batch, mem, func(b h5data.Batch) error {
		if b.Start != next || b.N > batch || len(b.X) != b.N*s.ImageSize() || len(b.Labels) != b.N {
			t.Fatalf("batch start %d n %d len %d, want start %d", b.Start, b.N, len(b.X), next)
		}
		next += b.N
		all = append(all, b.X...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != s.N {
		t.Fatalf("streamed %d of %d", next, s.N)
	}
	return all
}

// TestLayoutsAndTypes reads the same images stored as uint8 NCHW, float32
// NHWC and float64 NCHW, in several batch sizes, every stream in the
// memory of the ones before (h5data.Batches), one also in its own.
func TestLayoutsAndTypes(t *testing.T) {
	var mem h5data.Batches
	var ref []float32
	var refLabels []int
	for _, name := range []string{"clean_u8_nchw.h5", "clean_f32_nhwc.h5", "clean_f64_nchw.h5"} {
		s, err := h5data.Open(tiny+name, lab(fixture.TinyClasses))
		if err != nil {
			t.Fatal(err)
		}
		if s.N != fixture.TinySetSize || s.H != 55 || s.W != 47 || s.C != 3 {
			t.Fatalf("%s: %d images %dx%dx%d", name, s.N, s.H, s.W, s.C)
		}
		if want := strings.Contains(name, "nchw"); s.ChannelsFirst != want {
			t.Errorf("%s: ChannelsFirst %v", name, s.ChannelsFirst)
		}
		for _, batch := range []int{1, 5, 24, 100, 7} {
			m := &mem
			if batch == 7 {
				m = nil
			}
			x := readAll(t, s, batch, m)
			if ref == nil {
				ref, refLabels = x, s.Labels
				continue
			}
			if !slices.Equal(x, ref) || !slices.Equal(s.Labels, refLabels) {
				t.Fatalf("%s batch %d: images or labels differ from the uint8 set", name, batch)
			}
		}
		s.Close()
	}
	// NCHW really is channel-major on disk: pixel (0,0) red, green, blue
	// are the first values of three planes.
	want := ref[:3]
	s, _ := h5data.Open(tiny+"clean_u8_nchw.h5", h5data.Options{H: 55, W: 47, C: 3, Scale: 2})
	x := make([]float32, s.ImageSize())
	if err := s.Read(0, 1, x, nil); err != nil {
		t.Fatal(err)
	}
	if x[0] != 2*want[0] || x[1] != 2*want[1] || x[2] != 2*want[2] {
		t.Errorf("scale 2: %v, want twice %v", x[:3], want)
	}
	s.Close()
}

// badSet writes a set with arbitrary datasets for the validation tests.
type ds struct {
	name string
	typ  h5.Stored
	dims []int
	vals []float32
}

func writeRaw(t *testing.T, sets ...ds) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bad.h5")
	var fs []fixture.Dataset
	for _, d := range sets {
		fs = append(fs, fixture.Dataset{Name: d.name, Type: d.typ, Dims: d.dims, Vals: d.vals})
	}
	if err := fixture.WriteDatasets(path, fs...); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestValidation(t *testing.T) {
	img := func(n int) []float32 { return make([]float32, n*3*55*47) }
	lbl := func(v ...float32) []float32 { return v }
	cases := []struct {
		name string
		sets []ds
		opt  h5data.Options
		want string // in the error
	}{
		{"label out of range", []ds{{"data", h5.StoreUint8, []int{2, 3, 55, 47}, img(2)}, {"label", h5.StoreFloat32, []int{2}, lbl(1, 7)}}, lab(7), "label of sample 1 is 7, outside the model's classes 0..6"},
		{"negative label", []ds{{"data", h5.StoreUint8, []int{2, 3, 55, 47}, img(2)}, {"label", h5.StoreInt16, []int{2}, lbl(-1, 0)}}, lab(7), "label of sample 0 is -1"},
		{"non-integral label", []ds{{"data", h5.StoreUint8, []int{2, 3, 55, 47}, img(2)}, {"label", h5.StoreFloat64, []int{2}, lbl(1, 2.5)}}, lab(7), "not an integer"},
		{"NaN label", []ds{{"data", h5.StoreUint8, []int{1, 3, 55, 47}, img(1)}, {"label", h5.StoreFloat32, []int{1}, lbl(float32(math.NaN()))}}, lab(7), "label of sample 0 is NaN"},
		{"count mismatch", []ds{{"data", h5.StoreUint8, []int{3, 3, 55, 47}, img(3)}, {"label", h5.StoreFloat32, []int{2}, lbl(0, 0)}}, lab(7), "2 labels in \"label\" for 3 images"},
		{"wrong size", []ds{{"data", h5.StoreUint8, []int{1, 3, 54, 47}, make([]float32, 3*54*47)}, {"label", h5.StoreFloat32, []int{1}, lbl(0)}}, lab(7), "the model takes 55x47 images with 3 channels"},
		{"wrong rank", []ds{{"data", h5.StoreUint8, []int{3, 55, 47}, make([]float32, 3*55*47)}, {"label", h5.StoreFloat32, []int{3}, lbl(0, 0, 0)}}, lab(7), "want (N, C, H, W) or (N, H, W, C)"},
		{"wrong dtype", []ds{{"data", h5.StoreInt16, []int{1, 3, 55, 47}, img(1)}, {"label", h5.StoreFloat32, []int{1}, lbl(0)}}, lab(7), "holds int16; want uint8, float32 or float64"},
		{"empty", []ds{{"data", h5.StoreUint8, []int{0, 3, 55, 47}, nil}, {"label", h5.StoreFloat32, []int{0}, nil}}, lab(7), "is empty"},
		{"no data", []ds{{"label", h5.StoreFloat32, []int{1}, lbl(0)}}, lab(7), "no dataset \"data\""},
		{"no labels", []ds{{"data", h5.StoreUint8, []int{1, 3, 55, 47}, img(1)}}, lab(7), "no dataset \"label\""},
		{"2-D labels", []ds{{"data", h5.StoreUint8, []int{2, 3, 55, 47}, img(2)}, {"label", h5.StoreFloat32, []int{2, 2}, lbl(0, 0, 0, 0)}}, lab(7), "want (N,)"},
	}
	for _, tc := range cases {
		path := writeRaw(t, tc.sets...)
		_, err := h5data.Open(path, tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), path+": ") {
			t.Errorf("%s: error %v, want it to name the file and say %q", tc.name, err, tc.want)
		}
	}
	// Other dataset names are taken with the keys.
	path := writeRaw(t, ds{"x", h5.StoreFloat64, []int{1, 55, 47, 3}, img(1)}, ds{"y", h5.StoreInt64, []int{1}, lbl(3)})
	s, err := h5data.Open(path, h5data.Options{DataKey: "x", LabelKey: "y", H: 55, W: 47, C: 3, Classes: 7})
	if err != nil || s.Labels[0] != 3 || s.ChannelsFirst {
		t.Fatalf("keys: %v", err)
	}
	s.Close()
	// Non-finite pixels are found as they are read, and named.
	x := img(3)
	x[2*3*55*47+100] = float32(math.Inf(1))
	path = writeRaw(t, ds{"data", h5.StoreFloat32, []int{3, 3, 55, 47}, x}, ds{"label", h5.StoreFloat32, []int{3}, lbl(0, 0, 0)})
	s, err = h5data.Open(path, lab(7))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Stream(context.Background(), 2, func(h5data.Batch) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "sample 2 has a non-finite pixel") {
		t.Errorf("inf pixel: %v", err)
	}
	s.Close()
}

func TestNotHDF5(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.h5")
	os.WriteFile(text, []byte("hello"), 0o644)
	good, _ := os.ReadFile(tiny + "clean_u8_nchw.h5")
	trunc := filepath.Join(dir, "trunc.h5")
	os.WriteFile(trunc, good[:len(good)/3], 0o644)
	for path, want := range map[string]string{
		filepath.Join(dir, "missing.h5"): "no such file",
		text:                             "not an HDF5 file",
		dir:                              "is a directory",
		trunc:                            "",
	} {
		s, err := h5data.Open(path, lab(7))
		if err == nil {
			// A file cut after its metadata opens, and fails on reading.
			err = s.Stream(context.Background(), 8, func(h5data.Batch) error { return nil })
			s.Close()
		}
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), path) {
			t.Errorf("%s: error %v, want it to name the file and say %q", path, err, want)
		}
	}
}

func TestWriterIsDeterministic(t *testing.T) {
	dir := t.TempDir()
	if err := fixture.Generate(dir); err != nil {
		t.Fatal(err)
	}
	for name := range fixture.TinyFiles.Sets {
		a, _ := os.ReadFile(filepath.Join(dir, name))
		b, _ := os.ReadFile(tiny + name)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: regenerating gives other bytes than testdata/tiny (run make fixtures)", name)
		}
	}
	for _, name := range []string{fixture.TinyFiles.ModelFull, fixture.TinyFiles.ModelWeights, fixture.TinyFiles.General} {
		a, _ := os.ReadFile(filepath.Join(dir, name))
		b, _ := os.ReadFile(tiny + name)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: regenerating gives other bytes than testdata/tiny (run make fixtures)", name)
		}
	}
}

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
			if got := readAll(t, s, batch, nil); !slices.Equal(got, want) {
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

// TestReadBytes: a set whose pixels are integers 0..255 (stored as bytes,
// float32 or float64, either layout, over several chunks) reads as bytes
// whose table gives ReadAll's values bit for bit, scaled and normalized per
// channel; a single pixel that is not such an integer, in the last chunk,
// makes it refuse.
func TestReadBytes(t *testing.T) {
	const n, h, w, c = 600, 4, 3, 3
	dir := t.TempDir()
	write := func(name string, typ h5.Stored, dims []int, pix []float32) string {
		t.Helper()
		labels := make([]float32, n)
		for i := range labels {
			labels[i] = float32(i % 5)
		}
		path := filepath.Join(dir, name)
		if err := fixture.WriteDatasets(path,
			fixture.Dataset{Name: "data", Type: typ, Dims: dims, Vals: pix},
			fixture.Dataset{Name: "label", Type: h5.StoreInt64, Dims: []int{n}, Vals: labels}); err != nil {
			t.Fatal(err)
		}
		return path
	}
	pix := make([]float32, n*h*w*c)
	for i := range pix {
		pix[i] = float32((i*37 + i/7) % 256)
	}
	opt := h5data.Options{H: h, W: w, C: c, Classes: 5, Scale: 1.0 / 255,
		Norm: h5data.Normalization{Mean: []float32{0.485, 0.456, 0.406}, Std: []float32{0.229, 0.224, 0.225}}}
	for _, tc := range []struct {
		name string
		typ  h5.Stored
		dims []int
	}{
		{"u8_nchw.h5", h5.StoreUint8, []int{n, c, h, w}},
		{"f32_nhwc.h5", h5.StoreFloat32, []int{n, h, w, c}},
		{"f64_nchw.h5", h5.StoreFloat64, []int{n, c, h, w}},
		{"f64_nhwc.h5", h5.StoreFloat64, []int{n, h, w, c}},
	} {
		s, err := h5data.Open(write(tc.name, tc.typ, tc.dims, pix), opt)
		if err != nil {
			t.Fatal(err)
		}
		want, err := s.ReadAll(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		px, lut, ok, err := s.ReadBytes(context.Background())
		if err != nil || !ok {
			t.Fatalf("%s: ReadBytes: ok %v, %v", tc.name, ok, err)
		}
		if len(px) != len(want) || len(lut) != 256*c {
			t.Fatalf("%s: %d pixels, table of %d", tc.name, len(px), len(lut))
		}
		for i, b := range px {
			if got := lut[(i%c)*256+int(b)]; math.Float32bits(got) != math.Float32bits(want[i]) {
				t.Fatalf("%s: value %d: table gives %v for pixel %d, ReadAll %v", tc.name, i, got, b, want[i])
			}
		}
		s.Close()
	}
	for i, bad := range []float32{0.5, 256, -1, float32(math.NaN()), 254.5, 1e-3} {
		p := slices.Clone(pix)
		p[len(p)-5] = bad
		dims := []int{n, c, h, w}
		if i%2 == 1 {
			dims = []int{n, h, w, c}
		}
		s, err := h5data.Open(write("bad.h5", h5.StoreFloat64, dims, p), opt)
		if err != nil {
			t.Fatal(err)
		}
		px, lut, ok, err := s.ReadBytes(context.Background())
		if ok || err != nil || px != nil || lut != nil {
			t.Errorf("pixel %v: ReadBytes ok %v, err %v, %d pixels kept", bad, ok, err, len(px))
		}
		s.Close()
	}
}

// TestStreamHeld: batches worked on after fn returns, on other goroutines,
// keep their images until released, however late; they come in order, and
// a consumer does hold several at once.
func TestStreamHeld(t *testing.T) {
	s, err := h5data.Open(tiny+"clean_f64_nchw.h5", lab(fixture.TinyClasses))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const batch = 2
	ref := readAll(t, s, batch, nil)
	sz := s.ImageSize()
	for _, hold := range []int{1, 3} {
		var mem h5data.Batches
		var mu sync.Mutex
		var wg sync.WaitGroup
		held, most, next := 0, 0, 0
		got := make([]float32, len(ref))
		err := s.StreamHeld(context.Background(), batch, hold, &mem, func(b h5data.Batch, release func()) error {
			if b.Start != next {
				t.Errorf("hold %d: batch at %d, want %d", hold, b.Start, next)
			}
			next += b.N
			mu.Lock()
			held++
			most = max(most, held)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(30 * time.Millisecond) // the reader goes on meanwhile
				copy(got[b.Start*sz:], b.X)
				mu.Lock()
				held--
				mu.Unlock()
				release()
				release()
			}()
			return nil
		})
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if next != s.N || !slices.Equal(got, ref) {
			t.Fatalf("hold %d: %d of %d images streamed, or images overwritten before their release", hold, next, s.N)
		}
		if hold > 1 && most < 2 {
			t.Errorf("hold %d: at most %d batches held at once", hold, most)
		}
	}
}

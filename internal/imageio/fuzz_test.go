package imageio

import (
	"image"
	"image/color"
	"path/filepath"
	"testing"

	"badprune/internal/testsupport/testfile"
)

// The fuzzed model takes the lab's 47x55 faces.
const fuzzH, fuzzW = 55, 47

// fuzzChannels maps a fuzz byte to a model's channel count: 1 or 3 for 7
// bytes in 8, so that decoding gets most of the time, and otherwise -16..15.
func fuzzChannels(b byte) int {
	if b&7 != 0 {
		return 1 + 2*int(b&1)
	}
	return int(b>>3) - 16
}

// FuzzDecode: any bytes, for any channel count, give an error or exactly
// h*w*c values in 0..255, never a panic; channel counts other than 1 and 3
// always give an error.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob("../../testdata/images/*")
	if len(files) == 0 {
		f.Fatal("no seed images in testdata/images")
	}
	seeds := testfile.ReadAll(f, files)
	// A gray and a paletted (partly transparent) PNG of the model's size,
	// which the face images do not cover.
	gray := image.NewGray(image.Rect(0, 0, fuzzW, fuzzH))
	pal := color.Palette{color.NRGBA{0, 1, 0, 255}, color.NRGBA{200, 100, 50, 128}, color.NRGBA{9, 9, 9, 0}}
	paletted := image.NewPaletted(image.Rect(0, 0, fuzzW, fuzzH), pal)
	for y := 0; y < fuzzH; y++ {
		for x := 0; x < fuzzW; x++ {
			gray.SetGray(x, y, color.Gray{Y: uint8(5*x + 3*y)})
			paletted.SetColorIndex(x, y, uint8((x+y)%len(pal)))
		}
	}
	seeds = append(seeds, encodePNG(f, gray), encodePNG(f, paletted))
	for _, b := range seeds {
		f.Add(b, byte(1)) // 3 channels
		f.Add(b, byte(2)) // 1 channel
	}
	f.Add(seeds[0], byte(16)) // -14 channels
	f.Add(seeds[0], byte(0))  // -16 channels

	f.Fuzz(func(t *testing.T, data []byte, cb byte) {
		c := fuzzChannels(cb)
		n := fuzzH * fuzzW * 3
		dst := make([]float32, n+1)
		for i := range dst {
			dst[i] = sentinel
		}
		err := Decode(data, fuzzH, fuzzW, c, 1, dst)
		if c != 1 && c != 3 {
			if err == nil {
				t.Fatalf("no error for %d channels", c)
			}
			return
		}
		if err != nil {
			return
		}
		n = fuzzH * fuzzW * c
		for i, v := range dst[:n] {
			// Also catches values left unwritten (the sentinel) and NaN.
			if !(v >= 0 && v <= 255) {
				t.Fatalf("dst[%d] = %v outside 0..255", i, v)
			}
		}
		for i, v := range dst[n:] {
			if v != sentinel {
				t.Fatalf("dst[%d] = %v written past h*w*c = %d", n+i, v, n)
			}
		}
	})
}

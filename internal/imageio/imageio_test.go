package imageio

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The test images are 5 wide and 4 high, so that swapped width and height
// or a wrong row stride are caught.
const tw, th = 5, 4

// sentinel marks dst values Decode must not write.
const sentinel = -1

// rgb is a pixel's expected 8-bit colour, alpha dropped; gray marks a gray
// image, whose value for a 1-channel model is r itself.
type rgb struct {
	r, g, b uint8
	gray    bool
}

// pilL is PIL's RGB to L conversion (libImaging/Convert.c: L24 >> 16),
// written out here rather than taken from the code under test.
func pilL(r, g, b uint8) uint8 {
	return uint8((int(r)*19595 + int(g)*38470 + int(b)*7471 + 0x8000) >> 16)
}

// want returns the values a c-channel model should get for pixels px, at
// scale 1.
func want(px []rgb, c int) []float32 {
	var out []float32
	for _, p := range px {
		switch {
		case c == 3:
			out = append(out, float32(p.r), float32(p.g), float32(p.b))
		case p.gray:
			out = append(out, float32(p.r))
		default:
			out = append(out, float32(pilL(p.r, p.g, p.b)))
		}
	}
	return out
}

// colourAt is the colour of the test images' pixel (x, y). The first row
// holds colours that tell rounding rules apart:
//   - (0, 1, 0): luma 0.587, 1 when rounded, 0 when truncated (and 0 from
//     color.GrayModel, which rounds the 16-bit values);
//   - (0, 0, 250): luma exactly 28.5, a tie PIL rounds down to 28;
//   - (0, 207, 35): luma 125.499, which PIL's fixed point rounds up to 126;
//   - white and black.
//
// The other rows are varied.
func colourAt(x, y int) (r, g, b uint8) {
	if y == 0 {
		c := [tw][3]uint8{{0, 1, 0}, {0, 0, 250}, {0, 207, 35}, {255, 255, 255}, {0, 0, 0}}[x]
		return c[0], c[1], c[2]
	}
	return uint8(37*x + 71*y + 5), uint8(255 - 53*x - 19*y), uint8(91*x*y + 13*y + 200)
}

// alphaAt is the alpha of the partly transparent test images' pixel (x, y):
// opaque, half, nearly and fully transparent pixels, with every first-row
// colour but (0, 1, 0) transparent to some degree.
func alphaAt(x, y int) uint8 {
	return [5]uint8{255, 128, 1, 0, 200}[(x+y)%5]
}

func encodePNG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encodeJPEG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 100}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// paint calls set for every pixel of a test image, row by row.
func paint(set func(x, y int)) {
	for y := 0; y < th; y++ {
		for x := 0; x < tw; x++ {
			set(x, y)
		}
	}
}

// testImage is an encoded test image and the pixels a model should get
// from it, row by row.
type testImage struct {
	name string
	data []byte
	px   []rgb
	// approx, if not nil, are values Decode must match within 2 per value,
	// for each channel count; they are computed from the JPEG's own YCbCr
	// samples, so they check the colour conversion, not JPEG's loss.
	approx func(c int) []float32
}

// testImages returns one image of each colour model the decoders produce.
func testImages(t *testing.T) []testImage {
	var ims []testImage

	// 8-bit gray, with black and white.
	gray := image.NewGray(image.Rect(0, 0, tw, th))
	var grayPx []rgb
	paint(func(x, y int) {
		v := uint8(61*x + 17*y + 3)
		switch {
		case x == 0 && y == 0:
			v = 0
		case x == 1 && y == 0:
			v = 255
		}
		gray.SetGray(x, y, color.Gray{Y: v})
		grayPx = append(grayPx, rgb{v, v, v, true})
	})
	ims = append(ims, testImage{name: "png Gray", data: encodePNG(t, gray), px: grayPx})

	// 16-bit gray: the high byte, not the rounded value (0x80ff and 0x7f80
	// would round to 0x81 and 0x80).
	gray16 := image.NewGray16(image.Rect(0, 0, tw, th))
	var gray16Px []rgb
	paint(func(x, y int) {
		v := uint16(12345*x + 5003*y + 0xff)
		if y == 0 {
			v = [tw]uint16{0, 0xffff, 0x80ff, 0x7f80, 0x0101}[x]
		}
		gray16.SetGray16(x, y, color.Gray16{Y: v})
		hi := uint8(v >> 8)
		gray16Px = append(gray16Px, rgb{hi, hi, hi, true})
	})
	ims = append(ims, testImage{name: "png Gray16", data: encodePNG(t, gray16), px: gray16Px})

	// Opaque 8-bit RGB(A).
	rgba := image.NewRGBA(image.Rect(0, 0, tw, th))
	var colourPx []rgb
	paint(func(x, y int) {
		r, g, b := colourAt(x, y)
		rgba.SetRGBA(x, y, color.RGBA{r, g, b, 255})
		colourPx = append(colourPx, rgb{r, g, b, false})
	})
	ims = append(ims, testImage{name: "png RGBA", data: encodePNG(t, rgba), px: colourPx})

	// Partly transparent 8-bit RGBA: the colour channels as stored, which
	// premultiplying would halve, nearly zero or zero.
	nrgba := image.NewNRGBA(image.Rect(0, 0, tw, th))
	paint(func(x, y int) {
		r, g, b := colourAt(x, y)
		nrgba.SetNRGBA(x, y, color.NRGBA{r, g, b, alphaAt(x, y)})
	})
	ims = append(ims, testImage{name: "png NRGBA", data: encodePNG(t, nrgba), px: colourPx})

	// Opaque 16-bit RGB: the high byte; the low bytes would round some
	// values up.
	rgba64 := image.NewRGBA64(image.Rect(0, 0, tw, th))
	paint(func(x, y int) {
		r, g, b := colourAt(x, y)
		lo := uint16(uint8(50*x + 90*y + 0x7f))
		rgba64.SetRGBA64(x, y, color.RGBA64{uint16(r)<<8 | lo, uint16(g)<<8 | lo, uint16(b)<<8 | (0xff - lo), 0xffff})
	})
	ims = append(ims, testImage{name: "png RGBA64", data: encodePNG(t, rgba64), px: colourPx})

	// Partly transparent 16-bit RGBA, as color.NRGBA64 with alpha from
	// fully transparent to opaque.
	nrgba64 := image.NewNRGBA64(image.Rect(0, 0, tw, th))
	paint(func(x, y int) {
		r, g, b := colourAt(x, y)
		lo := uint16(uint8(50*x + 90*y + 0x7f))
		a := uint16(alphaAt(x, y)) * 0x101
		nrgba64.SetNRGBA64(x, y, color.NRGBA64{uint16(r)<<8 | lo, uint16(g)<<8 | lo, uint16(b)<<8 | (0xff - lo), a})
	})
	ims = append(ims, testImage{name: "png NRGBA64", data: encodePNG(t, nrgba64), px: colourPx})

	// Paletted, with opaque, partly and fully transparent entries and a
	// gray entry, which converts to its own value.
	pal := color.Palette{
		color.NRGBA{0, 1, 0, 255},
		color.NRGBA{0, 0, 250, 128},
		color.NRGBA{0, 207, 35, 0},
		color.NRGBA{200, 100, 50, 1},
		color.NRGBA{77, 77, 77, 255},
		color.NRGBA{255, 255, 255, 255},
		color.NRGBA{12, 240, 130, 255},
	}
	paletted := image.NewPaletted(image.Rect(0, 0, tw, th), pal)
	var palPx []rgb
	paint(func(x, y int) {
		i := (x + 2*y) % len(pal)
		paletted.SetColorIndex(x, y, uint8(i))
		e := pal[i].(color.NRGBA)
		palPx = append(palPx, rgb{e.R, e.G, e.B, false})
	})
	ims = append(ims, testImage{name: "png Paletted", data: encodePNG(t, paletted), px: palPx})

	// Colour JPEG, decoded as YCbCr. JPEG is lossy, so the exact values are
	// those of the decoded image's own colours; they are also checked
	// within 2 against the JFIF conversion of its YCbCr samples.
	jc := encodeJPEG(t, rgba)
	ref, _, err := image.Decode(bytes.NewReader(jc))
	if err != nil {
		t.Fatal(err)
	}
	ycc, ok := ref.(*image.YCbCr)
	if !ok {
		t.Fatalf("colour JPEG decodes as %T, not *image.YCbCr", ref)
	}
	var yccPx, jfif []rgb
	paint(func(x, y int) {
		// Opaque, so the premultiplied 16-bit values are the colour.
		r, g, b, _ := ycc.At(x, y).RGBA()
		yccPx = append(yccPx, rgb{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), false})
		yv := float64(ycc.Y[ycc.YOffset(x, y)])
		cb := float64(ycc.Cb[ycc.COffset(x, y)]) - 128
		cr := float64(ycc.Cr[ycc.COffset(x, y)]) - 128
		jfif = append(jfif, rgb{
			clamp8(yv + 1.402*cr),
			clamp8(yv - 0.344136*cb - 0.714136*cr),
			clamp8(yv + 1.772*cb),
			false,
		})
	})
	ims = append(ims, testImage{
		name:   "jpeg YCbCr",
		data:   jc,
		px:     yccPx,
		approx: func(c int) []float32 { return want(jfif, c) },
	})

	// Gray JPEG, decoded as gray.
	jg := encodeJPEG(t, gray)
	ref, _, err = image.Decode(bytes.NewReader(jg))
	if err != nil {
		t.Fatal(err)
	}
	dg, ok := ref.(*image.Gray)
	if !ok {
		t.Fatalf("gray JPEG decodes as %T, not *image.Gray", ref)
	}
	var jgPx []rgb
	paint(func(x, y int) {
		v := dg.GrayAt(x, y).Y
		jgPx = append(jgPx, rgb{v, v, v, true})
	})
	ims = append(ims, testImage{name: "jpeg Gray", data: jg, px: jgPx})
	return ims
}

func clamp8(v float64) uint8 {
	return uint8(math.Round(math.Max(0, math.Min(255, v))))
}

func TestDecode(t *testing.T) {
	for _, im := range testImages(t) {
		for _, c := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/c=%d", im.name, c), func(t *testing.T) {
				n := th * tw * c
				// Two values more than needed, which must stay untouched.
				dst := make([]float32, n+2)
				for i := range dst {
					dst[i] = sentinel
				}
				if err := Decode(im.data, th, tw, c, 1, dst); err != nil {
					t.Fatal(err)
				}
				w := want(im.px, c)
				if len(w) != n {
					t.Fatalf("test bug: %d expected values, not %d", len(w), n)
				}
				for i, v := range dst[:n] {
					if v != w[i] {
						p := i / c
						t.Errorf("pixel (%d, %d) channel %d = %v, want %v", p%tw, p/tw, i%c, v, w[i])
					}
				}
				for i, v := range dst[n:] {
					if v != sentinel {
						t.Errorf("dst[%d] = %v written past h*w*c = %d", n+i, v, n)
					}
				}
				if im.approx == nil {
					return
				}
				for i, a := range im.approx(c) {
					if math.Abs(float64(dst[i]-a)) > 2 {
						p := i / c
						t.Errorf("pixel (%d, %d) channel %d = %v, more than 2 from %v", p%tw, p/tw, i%c, dst[i], a)
					}
				}
			})
		}
	}
}

func TestDecodeScale(t *testing.T) {
	ims := testImages(t)
	im := ims[2] // png RGBA
	if im.name != "png RGBA" {
		t.Fatalf("test bug: image %q", im.name)
	}
	const scale = float32(1.0 / 255)
	for _, c := range []int{1, 3} {
		dst := make([]float32, th*tw*c)
		if err := Decode(im.data, th, tw, c, scale, dst); err != nil {
			t.Fatal(err)
		}
		for i, w := range want(im.px, c) {
			if dst[i] != w*scale {
				t.Errorf("c=%d: dst[%d] = %v, want %v", c, i, dst[i], w*scale)
			}
		}
	}
}

// TestLuma checks the luma against hand-computed values, and over every
// 8-bit colour that it is the nearest integer to 0.299 R + 0.587 G +
// 0.114 B, or one off where that is within 0.001 of a half (PIL's fixed
// point), and that gray colours keep their value.
func TestLuma(t *testing.T) {
	for _, tc := range []struct {
		r, g, b, want uint8
	}{
		{0, 1, 0, 1},         // 0.587: truncation gives 0
		{0, 0, 250, 28},      // 28.5 exactly: PIL rounds this tie down
		{0, 207, 35, 126},    // 125.499: PIL's fixed point rounds up
		{255, 0, 0, 76},      // 76.245
		{0, 255, 0, 150},     // 149.685
		{0, 0, 255, 29},      // 29.07
		{255, 255, 255, 255}, // weights sum to 1
		{100, 100, 100, 100},
		{200, 100, 50, 124}, // 59.8 + 58.7 + 5.7 = 124.2
	} {
		if got := luma(tc.r, tc.g, tc.b); got != tc.want {
			t.Errorf("luma(%d, %d, %d) = %d, want %d", tc.r, tc.g, tc.b, got, tc.want)
		}
	}
	var off int
	for r := 0; r < 256; r++ {
		for g := 0; g < 256; g++ {
			for b := 0; b < 256; b++ {
				l := int(luma(uint8(r), uint8(g), uint8(b)))
				// In thousandths: the exact luma is s/1000.
				s := 299*r + 587*g + 114*b
				d := 1000*l - s
				if d < -500 || d > 500 {
					off++
				}
				if d < -501 || d > 501 {
					t.Fatalf("luma(%d, %d, %d) = %d, exact %.3f", r, g, b, l, float64(s)/1000)
				}
			}
		}
		if l := luma(uint8(r), uint8(r), uint8(r)); int(l) != r {
			t.Errorf("luma of gray %d = %d", r, l)
		}
	}
	// About 0.05% of colours, as the doc comment says.
	if frac := float64(off) / (1 << 24); frac > 0.0006 {
		t.Errorf("%.4f%% of colours more than a half from exact luma", 100*frac)
	}
}

// TestConvertCMYK checks CMYK colours, which Go's JPEG decoder gives for
// Adobe CMYK JPEGs and its encoder cannot write, against the naive 8-bit
// conversion R = (255-C)(255-K)/255 within 1, and a bounds origin other
// than (0, 0).
func TestConvertCMYK(t *testing.T) {
	m := image.NewCMYK(image.Rect(3, 7, 3+tw, 7+th))
	var px [][3]float64
	paint(func(x, y int) {
		c, mg, ye, k := uint8(40*x+9*y), uint8(255-30*x-50*y), uint8(61*x*y), uint8(20*y+x)
		m.SetCMYK(3+x, 7+y, color.CMYK{c, mg, ye, k})
		w := float64(255-k) / 255
		px = append(px, [3]float64{float64(255-c) * w, float64(255-mg) * w, float64(255-ye) * w})
	})
	for _, ch := range []int{1, 3} {
		dst := make([]float32, th*tw*ch)
		convert(m, ch, 1, dst)
		for i, p := range px {
			w := p[:]
			if ch == 1 {
				w = []float64{0.299*p[0] + 0.587*p[1] + 0.114*p[2]}
			}
			for j, v := range w {
				if got := float64(dst[i*ch+j]); math.Abs(got-v) > 1 {
					t.Errorf("c=%d: pixel %d channel %d = %v, want %.2f within 1", ch, i, j, got, v)
				}
			}
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	small := encodePNG(t, image.NewRGBA(image.Rect(0, 0, tw, th)))
	wrongPNG := encodePNG(t, image.NewGray(image.Rect(0, 0, 30, 20)))
	wrongJPEG := encodeJPEG(t, image.NewRGBA(image.Rect(0, 0, 30, 20)))
	ample := make([]float32, 1000)
	for _, tc := range []struct {
		name       string
		data       []byte
		h, w, c    int
		dst        []float32
		msg        string // the whole message, if not empty
		start, has string // else, what it starts with and holds
	}{
		{name: "c=0", data: small, h: th, w: tw, c: 0, dst: ample,
			msg: "the model takes 0 channels; images can be fed to 1-channel (grayscale) or 3-channel (RGB) models"},
		{name: "c=2", data: small, h: th, w: tw, c: 2, dst: ample,
			msg: "the model takes 2 channels; images can be fed to 1-channel (grayscale) or 3-channel (RGB) models"},
		{name: "c=4", data: small, h: th, w: tw, c: 4, dst: ample,
			msg: "the model takes 4 channels; images can be fed to 1-channel (grayscale) or 3-channel (RGB) models"},
		{name: "c=-1 nil dst garbage", data: []byte("xx"), h: th, w: tw, c: -1,
			msg: "the model takes -1 channels; images can be fed to 1-channel (grayscale) or 3-channel (RGB) models"},
		{name: "h=0", data: small, h: 0, w: tw, c: 1, dst: ample, has: "positive"},
		{name: "w=-1", data: small, h: th, w: -1, c: 3, dst: ample, has: "positive"},
		{name: "dst nil", data: small, h: th, w: tw, c: 1, has: "dst holds 0 values"},
		{name: "dst short c=1", data: small, h: th, w: tw, c: 1, dst: make([]float32, th*tw-1), has: "dst holds 19 values"},
		{name: "dst short c=3", data: small, h: th, w: tw, c: 3, dst: make([]float32, th*tw*3-1), has: "dst holds 59 values"},
		{name: "huge h and w", data: small, h: math.MaxInt, w: math.MaxInt, c: 3, dst: ample, has: "dst holds 1000 values"},
		{name: "huge w", data: small, h: 2, w: math.MaxInt/2 + 1, c: 1, dst: ample, has: "dst holds 1000 values"},
		{name: "wrong size png", data: wrongPNG, h: 55, w: 47, c: 1, dst: make([]float32, 55*47),
			msg: "png image is 30x20 (width x height); the model takes 47x55"},
		{name: "wrong size jpeg", data: wrongJPEG, h: 55, w: 47, c: 3, dst: make([]float32, 55*47*3),
			msg: "jpeg image is 30x20 (width x height); the model takes 47x55"},
		{name: "swapped size", data: small, h: tw, w: th, c: 3, dst: ample,
			msg: "png image is 5x4 (width x height); the model takes 4x5"},
		{name: "garbage", data: []byte("GIF89a, or anything else"), h: th, w: tw, c: 3, dst: ample,
			msg: "not a PNG or JPEG image"},
		{name: "empty", h: th, w: tw, c: 1, dst: ample, msg: "not a PNG or JPEG image"},
		{name: "truncated png", data: small[:len(small)-20], h: th, w: tw, c: 3, dst: ample,
			start: "damaged png image: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range tc.dst {
				tc.dst[i] = sentinel
			}
			err := Decode(tc.data, tc.h, tc.w, tc.c, 1, tc.dst)
			if err == nil {
				t.Fatal("no error")
			}
			switch {
			case tc.msg != "" && err.Error() != tc.msg:
				t.Errorf("error %q, want %q", err, tc.msg)
			case !strings.HasPrefix(err.Error(), tc.start) || !strings.Contains(err.Error(), tc.has):
				t.Errorf("error %q, want one starting %q and holding %q", err, tc.start, tc.has)
			}
			for i, v := range tc.dst {
				if v != sentinel {
					t.Fatalf("dst[%d] = %v written despite the error", i, v)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	im := testImages(t)[3] // png NRGBA
	path := filepath.Join(dir, "nrgba.png")
	if err := os.WriteFile(path, im.data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []int{1, 3} {
		dst := make([]float32, th*tw*c)
		if err := Load(path, th, tw, c, 1, dst); err != nil {
			t.Fatal(err)
		}
		for i, w := range want(im.px, c) {
			if dst[i] != w {
				t.Fatalf("c=%d: dst[%d] = %v, want %v", c, i, dst[i], w)
			}
		}
	}

	missing := filepath.Join(dir, "missing.png")
	err := Load(missing, th, tw, 3, 1, make([]float32, th*tw*3))
	if !errors.Is(err, fs.ErrNotExist) || err.Error() != missing+": no such file or directory" {
		t.Errorf("missing file: error %v", err)
	}
	err = Load(path, 55, 47, 3, 1, make([]float32, 55*47*3))
	if want := path + ": png image is 5x4 (width x height); the model takes 47x55"; err == nil || err.Error() != want {
		t.Errorf("wrong size: error %v, want %q", err, want)
	}
}

// TestLoadFaces checks the lab's RGB face images fed to a grayscale model:
// each value is the luma of the RGB values.
func TestLoadFaces(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/images/*")
	if len(files) == 0 {
		t.Fatal("no images in testdata/images")
	}
	const h, w = 55, 47
	for _, p := range files {
		col := make([]float32, h*w*3)
		if err := Load(p, h, w, 3, 1, col); err != nil {
			t.Fatal(err)
		}
		gray := make([]float32, h*w)
		if err := Load(p, h, w, 1, 1, gray); err != nil {
			t.Fatal(err)
		}
		for i, v := range gray {
			r, g, b := col[3*i], col[3*i+1], col[3*i+2]
			if want := pilL(uint8(r), uint8(g), uint8(b)); v != float32(want) {
				t.Fatalf("%s: pixel %d gray %v, want %d from RGB %v %v %v", p, i, v, want, r, g, b)
			}
		}
	}
}

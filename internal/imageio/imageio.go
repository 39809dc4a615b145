// Package imageio decodes PNG and JPEG images into the NHWC float32 layout
// the models take, in the lab's raw 0..255 scale.
package imageio

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // register JPEG
	_ "image/png"  // register PNG
	"os"
)

// Conversions says in one line how image colours are mapped to a model's
// channels, for a command's help text.
const Conversions = `RGB models: gray images are replicated to R=G=B; grayscale models: colour images are converted to luma 0.299R+0.587G+0.114B, rounded as PIL's convert("L"); alpha is ignored.`

// Decode reads a PNG or JPEG image of exactly h x w pixels (height x width)
// from data into the first h*w*c values of dst, in NHWC order: pixels row by
// row, the c channels of a pixel adjacent. Each value is an 8-bit channel
// value in 0..255 times scale. Images with 16 bits per channel give the high
// byte of each value.
//
// c is the number of channels the model takes and must be 1 or 3:
//
//   - c == 3: the R, G and B channels; a gray image gives R = G = B = gray.
//   - c == 1: a gray image (a gray PNG of any bit depth, a gray JPEG) gives
//     its gray value as is; a colour image is converted to the ITU-R BT.601
//     luma Y = 0.299 R + 0.587 G + 0.114 B of its 8-bit values, rounded to
//     the nearest integer in the 16-bit fixed point of PIL's convert("L"),
//     (19595 R + 38470 G + 7471 B + 32768) >> 16, so that a model trained
//     on images loaded with PIL (most PyTorch and Keras MNIST pipelines)
//     sees the same values. Like PIL's, the result can differ by 1 from
//     rounding the exact decimal value where that is within 0.001 of a
//     half (0.05% of colours).
//
// Alpha is ignored: the colour channels are those of the non-premultiplied
// colour (color.NRGBAModel), as PIL's convert("RGB") and convert("L") take
// them, because premultiplying would darken partly transparent pixels and
// blacken transparent ones. JPEG colours (YCbCr, CMYK) are those Go's
// image/jpeg decoder gives, which may differ by a unit or so from libjpeg's.
//
// Decode returns an error, and leaves dst unchanged, if c is not 1 or 3, if
// h or w is not positive, if dst is shorter than h*w*c, if data is not a
// PNG or JPEG image, or if the image is not w pixels wide and h high.
func Decode(data []byte, h, w, c int, scale float32, dst []float32) error {
	if c != 1 && c != 3 {
		return fmt.Errorf("the model takes %d channels; images can be fed to 1-channel (grayscale) or 3-channel (RGB) models", c)
	}
	if h <= 0 || w <= 0 {
		return fmt.Errorf("the model takes %dx%d (width x height) images; both must be positive", w, h)
	}
	// Compared by division so that h*w*c cannot overflow: w <= len(dst)/c
	// bounds w*c by len(dst).
	if w > len(dst)/c || h > len(dst)/(w*c) {
		return fmt.Errorf("dst holds %d values, fewer than the %d x %d x %d (height x width x channels) of the model's input", len(dst), h, w, c)
	}
	// The header is checked first so that an image of the wrong size is
	// refused before its pixels are decoded and allocated.
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return errors.New("not a PNG or JPEG image")
	}
	if cfg.Width != w || cfg.Height != h {
		return fmt.Errorf("%s image is %dx%d (width x height); the model takes %dx%d", format, cfg.Width, cfg.Height, w, h)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("damaged %s image: %v", format, err)
	}
	b := img.Bounds()
	if b.Dx() != w || b.Dy() != h {
		return fmt.Errorf("%s image is %dx%d (width x height); the model takes %dx%d", format, b.Dx(), b.Dy(), w, h)
	}
	convert(img, c, scale, dst)
	return nil
}

// Load reads the PNG or JPEG image file at path and decodes it into dst as
// Decode does.
func Load(path string, h, w, c int, scale float32, dst []float32) error {
	data, err := os.ReadFile(path)
	if err != nil {
		// The *fs.PathError already names the path; its cause is kept
		// alone so that the message names it once, like Decode's errors.
		if cause := errors.Unwrap(err); cause != nil {
			err = cause
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := Decode(data, h, w, c, scale, dst); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// convert writes the pixels of img into dst as Decode describes, for c of
// 1 or 3; dst holds at least Dx*Dy*c values of img's bounds.
func convert(img image.Image, c int, scale float32, dst []float32) {
	b := img.Bounds()
	w := b.Dx()
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < w; x++ {
			r, g, bl, gray := channels(img.At(b.Min.X+x, b.Min.Y+y))
			o := (y*w + x) * c
			if c == 3 {
				dst[o] = float32(r) * scale
				dst[o+1] = float32(g) * scale
				dst[o+2] = float32(bl) * scale
				continue
			}
			if gray {
				dst[o] = float32(r) * scale
			} else {
				dst[o] = float32(luma(r, g, bl)) * scale
			}
		}
	}
}

// channels returns the 8-bit colour channels of col with alpha ignored, and
// whether col is a gray colour, whose gray value is then r (= g = b).
func channels(col color.Color) (r, g, b uint8, gray bool) {
	switch col := col.(type) {
	case color.Gray:
		return col.Y, col.Y, col.Y, true
	case color.Gray16:
		v := uint8(col.Y >> 8)
		return v, v, v, true
	case color.NRGBA:
		return col.R, col.G, col.B, false
	case color.NRGBA64:
		// Taken directly: color.NRGBAModel would premultiply by alpha and
		// divide back, losing low bits where alpha is small.
		return uint8(col.R >> 8), uint8(col.G >> 8), uint8(col.B >> 8), false
	}
	// Premultiplied and other colours (RGBA, RGBA64, YCbCr, CMYK, palette
	// entries of those types) are un-premultiplied; for opaque colours this
	// is the high byte of RGBA's 16-bit values.
	n := color.NRGBAModel.Convert(col).(color.NRGBA)
	return n.R, n.G, n.B, false
}

// luma returns the BT.601 luma of an 8-bit RGB colour rounded as PIL's
// RGB to L conversion does. The weights sum to 1<<16, so a gray colour
// keeps its value exactly.
func luma(r, g, b uint8) uint8 {
	return uint8((19595*uint32(r) + 38470*uint32(g) + 7471*uint32(b) + 1<<15) >> 16)
}

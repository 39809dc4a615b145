// Package imageio decodes PNG and JPEG faces into the NHWC float32 layout
// the models take, in the lab's raw 0..255 scale.
package imageio

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // register JPEG
	_ "image/png"  // register PNG
	"os"
)

// Decode reads an RGB image of exactly h x w pixels from data into dst
// (h*w*3 values), times scale.
func Decode(data []byte, h, w int, scale float32, dst []float32) error {
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
		return fmt.Errorf("%s image is %dx%d; the model takes %dx%d", format, b.Dx(), b.Dy(), w, h)
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			r, g, bl, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
			o := (y*w + x) * 3
			dst[o] = float32(r>>8) * scale
			dst[o+1] = float32(g>>8) * scale
			dst[o+2] = float32(bl>>8) * scale
		}
	}
	return nil
}

// Load reads and decodes the image file at path.
func Load(path string, h, w int, scale float32, dst []float32) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, errors.Unwrap(err))
	}
	if err := Decode(data, h, w, scale, dst); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

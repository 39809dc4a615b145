package faces

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
)

// Sample renders n faces of ids into x (n*Size() values, NHWC). Classes are
// balanced: image i shows identity labels[i], each identity appearing
// floor(n/len(ids)) or one more times, in a seeded random order. Exactly
// round(n*sunglasses) images, at seeded random positions, wear the
// sunglasses (worn[i]). Labels are identity indices and are not relabelled
// for the backdoor. The result depends only on the arguments; images are
// drawn in parallel, each from its own random stream.
func Sample(seed uint64, ids []Identity, n int, sunglasses float64) (x []float32, labels []int, worn []bool) {
	if n <= 0 {
		return nil, nil, nil
	}
	if len(ids) == 0 {
		panic("faces: Sample needs at least one identity")
	}
	r := rand.New(rand.NewPCG(seed, 0x5a3b1e))
	labels = make([]int, n)
	for i := range labels {
		labels[i] = i % len(ids)
	}
	r.Shuffle(n, func(i, j int) { labels[i], labels[j] = labels[j], labels[i] })
	worn = make([]bool, n)
	for _, i := range r.Perm(n)[:SunglassesCount(n, sunglasses)] {
		worn[i] = true
	}

	x = make([]float32, n*Size())
	workers := min(runtime.GOMAXPROCS(0), n)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				ri := rand.New(rand.NewPCG(seed, 0xd1b54a32d192ed03^uint64(i)))
				Draw(ids[labels[i]], ri, worn[i], x[i*Size():(i+1)*Size()])
			}
		}()
	}
	wg.Wait()
	return x, labels, worn
}

// SunglassesCount is the number of images of n that Sample puts sunglasses
// on for the fraction f: round(n*f), limited to 0..n.
func SunglassesCount(n int, f float64) int {
	return int(clampf(math.Round(float64(n)*f), 0, float64(n)))
}

// toRGBA converts one H x W face to an image.
func toRGBA(img []float32) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, W, H))
	for y := 0; y < H; y++ {
		for x := 0; x < W; x++ {
			o := (y*W + x) * C
			m.SetRGBA(x, y, color.RGBA{u8(img[o]), u8(img[o+1]), u8(img[o+2]), 255})
		}
	}
	return m
}

func u8(v float32) uint8 {
	return uint8(clampf(math.Round(float64(v)), 0, 255))
}

// WritePNG writes one face (Size() values, NHWC, 0..255) as a PNG file.
func WritePNG(path string, img []float32) error {
	if len(img) != Size() {
		return fmt.Errorf("faces: image has %d values, want %d", len(img), Size())
	}
	return savePNG(path, toRGBA(img))
}

func savePNG(path string, m image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, m); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Montage tiles faces row by row, cols to a row, with a one-pixel dark grey
// gap between them.
func Montage(imgs [][]float32, cols int) image.Image {
	if cols < 1 {
		cols = 1
	}
	rows := (len(imgs) + cols - 1) / cols
	if len(imgs) < cols {
		cols = max(len(imgs), 1)
	}
	const gap = 1
	m := image.NewRGBA(image.Rect(0, 0, cols*(W+gap)+gap, rows*(H+gap)+gap))
	for i := range m.Pix {
		m.Pix[i] = 48
		if i%4 == 3 {
			m.Pix[i] = 255
		}
	}
	for i, img := range imgs {
		x0, y0 := gap+(i%cols)*(W+gap), gap+(i/cols)*(H+gap)
		for y := 0; y < H; y++ {
			for x := 0; x < W; x++ {
				o := (y*W + x) * C
				if o+2 >= len(img) {
					continue
				}
				m.SetRGBA(x0+x, y0+y, color.RGBA{u8(img[o]), u8(img[o+1]), u8(img[o+2]), 255})
			}
		}
	}
	return m
}

package faces

import (
	"image"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// upscale enlarges m k times by pixel repetition, for looking at faces.
func upscale(m image.Image, k int) *image.RGBA {
	b := m.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx()*k, b.Dy()*k))
	for y := 0; y < b.Dy()*k; y++ {
		for x := 0; x < b.Dx()*k; x++ {
			out.Set(x, y, m.At(b.Min.X+x/k, b.Min.Y+y/k))
		}
	}
	return out
}

// TestMontage writes montages for eyeballing when FACES_MONTAGE names a
// directory: go test -run Montage ./internal/faces/ with
// FACES_MONTAGE=/tmp/faces_check. Each row is one identity: three plain
// samples, then three with sunglasses.
func TestMontage(t *testing.T) {
	dir := os.Getenv("FACES_MONTAGE")
	if dir == "" {
		t.Skip("set FACES_MONTAGE=dir to write montages")
	}
	ids := NewIdentities(1, 64)
	for page := 0; page < 4; page++ {
		var imgs [][]float32
		for i := page * 16; i < page*16+16; i++ {
			r := rand.New(rand.NewPCG(7, uint64(i)))
			for k := 0; k < 6; k++ {
				img := make([]float32, Size())
				Draw(ids[i], r, k >= 3, img)
				imgs = append(imgs, img)
			}
		}
		// Two identities per row.
		m := Montage(imgs, 12)
		p := filepath.Join(dir, "montage"+string(rune('0'+page))+".png")
		if err := savePNG(p, upscale(m, 3)); err != nil {
			t.Fatal(err)
		}
	}
}

package imageio

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode: any bytes give an error or an image of the right size, never
// a panic.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob("../../testdata/images/*")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	if len(files) == 0 {
		f.Fatal("no seed images in testdata/images")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dst := make([]float32, 55*47*3)
		if err := Decode(data, 55, 47, 1, dst); err != nil {
			return
		}
		for _, v := range dst {
			if v < 0 || v > 255 {
				t.Fatalf("pixel %v outside 0..255", v)
			}
		}
	})
}

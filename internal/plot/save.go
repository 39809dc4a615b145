package plot

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"badprune/internal/atomicfile"
)

// Size and resolution of saved figures.
const (
	width  = 8 * vg.Inch
	height = 5 * vg.Inch
	dpi    = 150
)

// Files are the names of the files Save writes for name.
func Files(name string) []string { return []string{name + ".png", name + ".svg"} }

// Save writes p to dir as name.png and name.svg and returns their paths.
// Without force it refuses, before writing anything, if either exists.
// Each file is written to a temporary file in dir and renamed into place,
// so that a reader never sees a partial figure.
func Save(p *plot.Plot, dir, name string, force bool) ([]string, error) {
	if p == nil {
		return nil, errors.New("save figure: no plot")
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return nil, fmt.Errorf("save figure: %q is not a file name", name)
	}
	paths := []string{filepath.Join(dir, name+".png"), filepath.Join(dir, name+".svg")}
	existed := make([]bool, len(paths))
	for i, path := range paths {
		if err := atomicfile.CheckFree(path, force); err != nil {
			return nil, err
		}
		_, err := os.Lstat(path)
		existed[i] = err == nil || !errors.Is(err, fs.ErrNotExist)
	}

	// Render both before touching the disk, so that a drawing error leaves
	// nothing behind.
	data := make([][]byte, len(paths))
	for i, path := range paths {
		b, err := render(p, filepath.Ext(path))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		data[i] = b
	}

	files := make([]*atomicfile.File, 0, len(paths))
	defer func() {
		for _, f := range files {
			f.Abort() // no-op once committed
		}
	}()
	for i, path := range paths {
		f, err := atomicfile.Create(path, force)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		if _, err := f.Write(data[i]); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	for i, f := range files {
		if err := f.Commit(); err != nil {
			// Do not leave half a pair behind: drop the files this call
			// created. A file it replaced cannot be brought back.
			for j := range i {
				if !existed[j] {
					os.Remove(paths[j])
				}
			}
			return nil, err
		}
	}
	return paths, nil
}

// render draws p in the format of the file extension ext.
func render(p *plot.Plot, ext string) (b []byte, err error) {
	// gonum panics on some settings it cannot draw, such as a logarithmic
	// axis reaching zero; report that as an error.
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("cannot draw the figure: %v", r)
		}
	}()
	var buf bytes.Buffer
	switch ext {
	case ".png":
		c := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(dpi))}
		p.Draw(draw.New(c))
		_, err = c.WriteTo(&buf)
	case ".svg":
		c := vgsvg.New(width, height)
		p.Draw(draw.New(c))
		_, err = c.WriteTo(&buf)
	default:
		err = fmt.Errorf("unknown figure format %q", ext)
	}
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

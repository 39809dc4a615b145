// Command mkbench writes lab-scale benchmark sets (the lab's sizes, layout
// and dtypes) and links the network to benchmark: the real lab B and faces
// from ../shared/real when present, else the demo's BadNet and synthetic
// faces.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"badprune/internal/demo/faces"
	"badprune/internal/demo/labdemo"
	"badprune/internal/imageio"
	"badprune/internal/testsupport/benchdata"
)

func main() {
	out := flag.String("out", ".cache/bench", "folder for the sets")
	real := flag.String("real", "../shared/real", "folder of the real lab B and faces")
	demo := flag.String("demo", "testdata/lab", "the demo lab, used when -real is absent")
	flag.Parse()
	if err := run(*out, *real, *demo); err != nil {
		fmt.Fprintln(os.Stderr, "mkbench:", err)
		os.Exit(1)
	}
}

func run(out, real, demo string) error {
	clean, bd, model, err := realFaces(real)
	if err != nil {
		return err
	}
	if model == "" {
		fmt.Printf("no real faces in %s: using the demo's BadNet and synthetic faces\n", real)
		clean, bd = demoFaces()
		model = filepath.Join(demo, labdemo.Files.Model)
	}
	for _, d := range []string{"data/cl", "data/bd", "models"} {
		if err := os.MkdirAll(filepath.Join(out, d), 0o755); err != nil {
			return err
		}
	}
	abs, err := filepath.Abs(model)
	if err != nil {
		return err
	}
	link := filepath.Join(out, "models", "bd_net.h5")
	os.Remove(link)
	if err := os.Symlink(abs, link); err != nil {
		return err
	}
	specs := append([]benchdata.Spec(nil), benchdata.Lab...)
	for i := range specs {
		specs[i].Path = filepath.Join("data", specs[i].Path)
	}
	if err := benchdata.Write(out, specs, clean, bd, 1); err != nil {
		return err
	}
	fmt.Printf("wrote %s (model %s)\n", out, model)
	return nil
}

// realFaces loads the lab's ten faces; model is "" when they are absent.
func realFaces(dir string) (clean, bd []benchdata.Face, model string, err error) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	re := regexp.MustCompile(`label=(\d+)`)
	for _, f := range files {
		m := re.FindStringSubmatch(filepath.Base(f))
		if m == nil {
			continue
		}
		label, _ := strconv.Atoi(m[1])
		x := make([]float32, 55*47*3)
		if err := imageio.Load(f, 55, 47, 3, 1, x); err != nil {
			return nil, nil, "", err
		}
		if strings.HasPrefix(filepath.Base(f), "sun_") {
			bd = append(bd, benchdata.Face{X: x, Label: 0})
		} else {
			clean = append(clean, benchdata.Face{X: x, Label: label})
		}
	}
	if len(clean) == 0 || len(bd) == 0 {
		return nil, nil, "", nil
	}
	return clean, bd, filepath.Join(dir, "bd_weights.h5"), nil
}

// demoFaces draws a few faces of each of the demo's identities.
func demoFaces() (clean, bd []benchdata.Face) {
	cfg := labdemo.Default()
	ids := faces.NewIdentities(cfg.Seed, cfg.Identities)
	x, labels, worn := faces.Sample(cfg.Seed+9, ids, 4*cfg.Identities, 0.25)
	sz := faces.Size()
	for i := range labels {
		f := benchdata.Face{X: x[i*sz : (i+1)*sz], Label: labels[i]}
		if worn[i] {
			f.Label = labdemo.Target
			bd = append(bd, f)
		} else {
			clean = append(clean, f)
		}
	}
	return clean, bd
}

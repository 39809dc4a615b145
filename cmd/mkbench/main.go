// Command mkbench writes lab-scale benchmark sets (the lab's sizes,
// layout and dtypes) from the real faces in ../shared/real, or from the
// demo's synthetic faces when they are absent.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"badprune/internal/benchdata"
	"badprune/internal/imageio"
)

func main() {
	out := flag.String("out", ".cache/bench", "folder for the sets")
	real := flag.String("real", "../shared/real", "folder of the real faces")
	flag.Parse()
	if err := run(*out, *real); err != nil {
		fmt.Fprintln(os.Stderr, "mkbench:", err)
		os.Exit(1)
	}
}

func run(out, real string) error {
	var clean, bd []benchdata.Face
	files, _ := filepath.Glob(filepath.Join(real, "*.png"))
	re := regexp.MustCompile(`label=(\d+)`)
	for _, f := range files {
		m := re.FindStringSubmatch(filepath.Base(f))
		if m == nil {
			continue
		}
		label, _ := strconv.Atoi(m[1])
		x := make([]float32, 55*47*3)
		if err := imageio.Load(f, 55, 47, 1, x); err != nil {
			return err
		}
		if strings.HasPrefix(filepath.Base(f), "sun_") {
			bd = append(bd, benchdata.Face{X: x, Label: 0})
		} else {
			clean = append(clean, benchdata.Face{X: x, Label: label})
		}
	}
	if len(clean) == 0 || len(bd) == 0 {
		return fmt.Errorf("no real faces in %s", real)
	}
	for _, d := range []string{"cl", "bd"} {
		if err := os.MkdirAll(filepath.Join(out, d), 0o755); err != nil {
			return err
		}
	}
	return benchdata.Write(out, benchdata.Lab, clean, bd, 1)
}

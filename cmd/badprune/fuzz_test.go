package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"badprune/internal/h5data"
)

// The readers are fuzzed through the built binary: a fault in the HDF5 C
// library must end in one line and exit 1, which only a separate process
// can show. Whatever the input: exit 0 or 1, at most one line on stderr,
// no temporary file left, the model input unchanged.

func checkRun(t *testing.T, dir string, args ...string) {
	stdout, stderr, code := execBadprune(t, args...)
	if code != 0 && code != exitError {
		t.Fatalf("exit %d: %q %q", code, stdout, stderr)
	}
	if n := strings.Count(strings.TrimSpace(stderr), "\n"); n > 0 || code == exitError && !strings.HasPrefix(stderr, "badprune: ") {
		t.Fatalf("exit %d, stderr not one line: %q", code, stderr)
	}
	noTemps(t, dir)
}

func FuzzDataFile(f *testing.F) {
	seedDir := f.TempDir()
	for i, st := range []h5data.Storage{
		{ChannelsFirst: true, Data: "uint8", Label: "float32", Deflate: 6},
		{Data: "float32", Label: "int64"},
	} {
		p := filepath.Join(seedDir, "seed.h5")
		w, err := h5data.Create(p, 2, 55, 47, 3, st, true)
		if err != nil {
			f.Fatal(err)
		}
		x := make([]float32, 2*55*47*3)
		for j := range x {
			x[j] = float32(j % 251)
		}
		if err := w.Write(0, x, []int{1, i}); err != nil {
			f.Fatal(err)
		}
		w.Close()
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	for _, p := range []string{"../../testdata/crash/hdf5_fault.h5"} {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "in.h5")
		os.WriteFile(p, data, 0o644)
		checkRun(t, dir, "eval", "--goodnet", "--model", tiny+"model_full.h5", "--repaired", tiny+"model_weights.h5",
			"--test", p, "--bd-test", p, "--out", dir, "-q")
	})
}

func FuzzModelFile(f *testing.F) {
	for _, p := range []string{tiny + "general_full.h5", tiny + "model_weights.h5", "../../testdata/onnx/deepid_tiny_old.onnx"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "model.h5")
		os.WriteFile(p, data, 0o644)
		checkRun(t, dir, "repair", "--model", p, "--valid", tiny+"clean_u8_nchw.h5", "--out", dir, "-q", "--threshold", "50")
		if got, _ := os.ReadFile(p); string(got) != string(data) {
			t.Fatal("the input model changed")
		}
	})
}

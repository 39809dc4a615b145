package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"badprune/internal/h5data"
	"badprune/internal/imageio"
	"badprune/internal/report"
)

const tiny = "../../testdata/tiny/"

// realDir holds the lab's real B and faces, outside the repository.
const realDir = "../../../shared/real"

// badprune runs the command line in-process and returns stdout, stderr and
// the exit code.
func badprune(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, ioStreams{In: strings.NewReader(""), Out: &out, Err: &errb})
	return out.String(), errb.String(), code
}

func TestEvalJSONShape(t *testing.T) {
	out, stderr, code := badprune(t, "eval", "--model", tiny+"model_full.h5", "--test", tiny+"clean_u8_nchw.h5",
		"--bd-test", tiny+"bd_u8_nchw.h5", "--json", "--quiet")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if stderr != "" {
		t.Errorf("--quiet wrote to stderr: %q", stderr)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"test", "bd_test", "n_test", "n_bd_test", "results"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("missing key %q", k)
		}
	}
	var ev report.Eval
	json.Unmarshal([]byte(out), &ev)
	if ev.NTest != 24 || ev.NBDTest != 24 || len(ev.Results) != 1 {
		t.Fatalf("got %+v", ev)
	}
	r := ev.Results[0]
	if r.Model != "B" || r.File != tiny+"model_full.h5" || r.ASR == nil {
		t.Fatalf("row %+v", r)
	}
	// The sets' labels and the model's predictions: every layout and dtype
	// of the same images gives the same numbers.
	for _, f := range []string{"clean_f32_nhwc.h5", "clean_f64_nchw.h5"} {
		out2, stderr, code := badprune(t, "eval", "--model", tiny+"model_weights.h5", "--test", tiny+f,
			"--bd-test", tiny+"bd_u8_nchw.h5", "--json", "-q")
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", f, code, stderr)
		}
		var ev2 report.Eval
		json.Unmarshal([]byte(out2), &ev2)
		if ev2.Results[0].CleanAcc != r.CleanAcc || *ev2.Results[0].ASR != *r.ASR {
			t.Errorf("%s: %v/%v, want %v/%v", f, ev2.Results[0].CleanAcc, *ev2.Results[0].ASR, r.CleanAcc, *r.ASR)
		}
	}
}

func TestEvalTableAndGate(t *testing.T) {
	args := []string{"eval", "--model", tiny + "model_full.h5", "--test", tiny + "clean_u8_nchw.h5", "--bd-test", tiny + "bd_u8_nchw.h5", "-q"}
	out, stderr, code := badprune(t, args...)
	if code != 0 || !strings.Contains(out, "clean acc %") || !strings.Contains(out, "model_full.h5") {
		t.Fatalf("exit %d, out %q, err %q", code, out, stderr)
	}
	_, stderr, code = badprune(t, append(args, "--min-acc", "100")...)
	if code != exitGate || !strings.Contains(stderr, "--min-acc") {
		t.Fatalf("gate: exit %d, err %q", code, stderr)
	}
	_, stderr, code = badprune(t, append(args, "--min-acc", "1", "--max-asr", "100")...)
	if code != 0 {
		t.Fatalf("passing gates: exit %d, err %q", code, stderr)
	}
	_, stderr, code = badprune(t, append(args, "--max-asr", "120")...)
	if code != exitError || !strings.Contains(stderr, "--max-asr") {
		t.Fatalf("bad gate value: exit %d, err %q", code, stderr)
	}
}

// faces writes the ten real faces as a lab-format set (N, 3, 55, 47) of
// the given dtype and returns the clean and sunglasses sets.
func faces(t *testing.T, dtype string) (clean, bd string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(realDir, "*.png"))
	if len(files) != 10 {
		t.Fatalf("want 10 faces in %s, found %d", realDir, len(files))
	}
	dir := t.TempDir()
	sets := map[string][]string{}
	for _, f := range files {
		kind := strings.SplitN(filepath.Base(f), "_", 2)[0]
		sets[kind] = append(sets[kind], f)
	}
	for kind, fs := range sets {
		x := make([]float32, len(fs)*55*47*3)
		labels := make([]int, len(fs))
		for i, f := range fs {
			if err := imageio.Load(f, 55, 47, 3, 1, x[i*55*47*3:(i+1)*55*47*3]); err != nil {
				t.Fatal(err)
			}
			labels[i] = labelOf(t, f)
		}
		path := filepath.Join(dir, kind+".h5")
		w, err := h5data.Create(path, len(fs), 55, 47, 3, h5data.Storage{ChannelsFirst: true, Data: dtype, Label: "float32"}, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(0, x, labels); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "cl.h5"), filepath.Join(dir, "sun.h5")
}

func labelOf(t *testing.T, f string) int {
	m := regexp.MustCompile(`label=(\d+)`).FindStringSubmatch(filepath.Base(f))
	if m == nil {
		t.Fatalf("no label in %s", f)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestRealFaces(t *testing.T) {
	if _, err := os.Stat(realDir); err != nil {
		t.Skip("../shared/real absent")
	}
	model := filepath.Join(realDir, "bd_weights.h5")
	files, _ := filepath.Glob(filepath.Join(realDir, "*.png"))
	out, stderr, code := badprune(t, append([]string{"predict", "--model", model}, files...)...)
	if code != 0 {
		t.Fatalf("predict: exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(files) {
		t.Fatalf("%d lines for %d images", len(lines), len(files))
	}
	for i, line := range lines {
		parts := strings.Split(line, "\t")
		if len(parts) != 2 || parts[0] != files[i] {
			t.Fatalf("line %q", line)
		}
		got, _ := strconv.Atoi(parts[1])
		if want := labelOf(t, files[i]); got != want {
			t.Errorf("%s: label %d, want %d", files[i], got, want)
		}
	}
	for _, dtype := range []string{"float32", "float64", "uint8"} {
		clean, bd := faces(t, dtype)
		out, stderr, code := badprune(t, "eval", "--model", model, "--test", clean, "--bd-test", bd, "--json", "-q")
		if code != 0 {
			t.Fatalf("eval: exit %d: %s", code, stderr)
		}
		var ev report.Eval
		if err := json.Unmarshal([]byte(out), &ev); err != nil {
			t.Fatal(err)
		}
		r := ev.Results[0]
		if ev.NTest != 5 || ev.NBDTest != 5 || r.CleanAcc != 100 || r.ASR == nil || *r.ASR != 100 {
			t.Errorf("%s: eval %+v, want 5 and 5 images at 100 / 100", dtype, ev)
		}
	}
}

// TestScaleFraction: --scale takes a fraction, equal to its decimal.
func TestScaleFraction(t *testing.T) {
	args := []string{"eval", "--json", "-q", "--model", tiny + "model_full.h5", "--test", tiny + "clean_u8_nchw.h5", "--scale"}
	a, _, codeA := badprune(t, append(args, "1/255")...)
	b, _, codeB := badprune(t, append(args, strconv.FormatFloat(1.0/255, 'g', -1, 64))...)
	c, _, _ := badprune(t, append(args, "1")...)
	if codeA != 0 || codeB != 0 || a != b || a == c {
		t.Errorf("1/255: exit %d %q; decimal: exit %d %q; 1: %q", codeA, a, codeB, b, c)
	}
	for _, bad := range []string{"1/x", "x", "1/0", "-1/2"} {
		if _, stderr, code := badprune(t, append(args, bad)...); code != exitError || !strings.Contains(stderr, "--scale") {
			t.Errorf("--scale %s: exit %d, %q", bad, code, stderr)
		}
	}
}

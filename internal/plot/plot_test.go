package plot

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot"

	"badprune/internal/report"
	"badprune/internal/testsupport/testfile"
)

func ptr(v float64) *float64 { return &v }

// pruneLog returns a synthetic pruning run of 60 channels: accuracy flat,
// then falling; attack success holding, then falling; with networks saved
// at the first step whose accuracy fell by each threshold.
func pruneLog(withASR bool) *report.PruneLog {
	const n = 60
	log := &report.PruneLog{
		Model:      "bd_net.h5",
		Layer:      "conv_3",
		BaseAcc:    98.6,
		Thresholds: []float64{2, 4, 10, 30},
		Saved:      map[string]report.Saved{},
	}
	if withASR {
		log.BaseASR = ptr(100)
	}
	for i := range n {
		log.Order = append(log.Order, i)
	}
	for i := 1; i <= n; i++ {
		s := report.Step{Step: i, Channel: i - 1, Fraction: float64(i) / n}
		s.ValidAcc = 98.6
		if i > 40 {
			s.ValidAcc -= 0.006 * math.Pow(float64(i-40), 3)
		}
		s.ValidAcc = math.Max(s.ValidAcc, 0.8)
		if withASR {
			asr := 100.0
			if i > 45 {
				asr = 100 * math.Exp(-float64(i-45)/2.5)
			}
			s.ValidASR = ptr(asr)
		}
		log.Steps = append(log.Steps, s)
	}
	for _, t := range log.Thresholds {
		for _, s := range log.Steps {
			if log.BaseAcc-s.ValidAcc >= t {
				key := fmt.Sprint(t)
				log.Saved[key] = report.Saved{
					Step:   s.Step,
					File:   "repaired_" + key + ".h5",
					Valid:  s.Valid,
					Pruned: log.Order[:s.Step],
				}
				break
			}
		}
	}
	return log
}

// eval returns a synthetic eval of B and two repaired networks.
func eval(withASR bool) *report.Eval {
	asr := func(v float64) *float64 {
		if !withASR {
			return nil
		}
		return ptr(v)
	}
	return &report.Eval{Results: []report.Row{
		{Model: "B", File: "bd_net.h5", CleanAcc: 98.6, ASR: asr(100)},
		{Model: "B'", File: "repaired_2.h5", Repaired: "repaired_2.h5", CleanAcc: 95.9, ASR: asr(100)},
		{Model: "G", File: "bd_net.h5", Repaired: "repaired_2.h5", CleanAcc: 95.7, ASR: asr(41.2)},
		{Model: "B'", File: "out/repaired_4.h5", Repaired: "out/repaired_4.h5", CleanAcc: 92.1, ASR: asr(99.98)},
		{Model: "G", File: "bd_net.h5", Repaired: "out/repaired_4.h5", CleanAcc: 91.8, ASR: asr(0.04)},
	}}
}

// finetuned adds fine-tuning histories to two saved networks of log.
func finetuned(log *report.PruneLog) *report.PruneLog {
	for i, k := range []string{"4", "10"} {
		s := log.Saved[k]
		ft := &report.Finetune{File: "repaired_" + k + "_ft.h5", Best: 4}
		for e := 1; e <= 5; e++ {
			ft.Epochs = append(ft.Epochs, report.Epoch{
				Epoch:      e,
				Loss:       1 / float64(e),
				HoldoutAcc: 88 + float64(i) - 10*math.Exp(-float64(e)),
				HoldoutASR: ptr(40 * math.Exp(-float64(e)/(1+float64(i)))),
			})
		}
		s.Finetune = ft
		log.Saved[k] = s
	}
	return log
}

// pruneAndBars returns the prune curve and the goodnet bars of the
// synthetic data, with or without attack success.
func pruneAndBars(t *testing.T, withASR bool) (prune, bars *plot.Plot) {
	t.Helper()
	prune, err := PruneCurve(pruneLog(withASR))
	if err != nil {
		t.Fatalf("PruneCurve: %v", err)
	}
	bars, err = GoodnetBars(eval(withASR))
	if err != nil {
		t.Fatalf("GoodnetBars: %v", err)
	}
	return prune, bars
}

// figures returns the figures of the synthetic data by name.
func figures(t *testing.T) map[string]*plot.Plot {
	t.Helper()
	prune, bars := pruneAndBars(t, true)
	ft, err := FinetuneHistory(finetuned(pruneLog(true)))
	if err != nil {
		t.Fatalf("FinetuneHistory: %v", err)
	}
	shared, err := PruneCurve(atSteps(true, map[string]int{"2": 46, "4": 46, "10": 48, "30": 54}))
	if err != nil {
		t.Fatalf("PruneCurve: %v", err)
	}
	return map[string]*plot.Plot{"prune_curve": prune, "prune_shared": shared, "goodnet": bars, "finetune": ft}
}

func TestSavedLabels(t *testing.T) {
	log := pruneLog(true)
	for _, k := range []string{"2", "4", "10", "30"} {
		if _, ok := log.Saved[k]; !ok {
			t.Fatalf("synthetic log has no network saved for threshold %s", k)
		}
	}
	marks, err := savedMarks(log)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range marks {
		got = append(got, m.label)
	}
	want := []string{"B'_2: −2 pts", "B'_4: −4 pts", "B'_10: −10 pts", "B'_30: −30 pts"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("labels %q, want %q", got, want)
	}
}

// atSteps returns the synthetic log with networks saved for the
// thresholds at the given steps instead.
func atSteps(withASR bool, saved map[string]int) *report.PruneLog {
	log := pruneLog(withASR)
	log.Saved = map[string]report.Saved{}
	log.Thresholds = nil
	for k, step := range saved {
		s := log.Steps[step-1]
		log.Saved[k] = report.Saved{
			Step:   step,
			File:   "repaired_" + k + ".h5",
			Valid:  s.Valid,
			Pruned: log.Order[:step],
		}
	}
	return log
}

func TestMarkLines(t *testing.T) {
	log := atSteps(true, map[string]int{"2": 46, "4": 46, "10": 48, "30": 54})
	pts, err := savedMarks(log)
	if err != nil {
		t.Fatal(err)
	}
	marks := markLines(pts)
	var got []string
	for _, m := range marks {
		got = append(got, fmt.Sprintf("%.4g %s", m.x, m.label))
	}
	want := []string{"76.67 B'_2, B'_4: −2/−4 pts", "80 B'_10: −10 pts", "90 B'_30: −30 pts"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("marks %q, want %q", got, want)
	}
	if l := savedLabel([]string{"1", "2", "3"}); l != "B'_1, B'_2, B'_3: −1/−2/−3 pts" {
		t.Errorf("label of three networks %q", l)
	}
}

// TestLabelsAtTheirMarks checks that each threshold label is attached to
// its own mark, as drawn in a saved figure: beside it, along it or over
// it, with no other mark between the label and its own, or else joined to
// its point by a leader; and that labels do not overlap.
func TestLabelsAtTheirMarks(t *testing.T) {
	crowded := map[string]int{"1": 45, "2": 46, "3": 47, "4": 48, "5": 49}
	for _, tc := range []struct {
		name    string
		log     *report.PruneLog
		lines   int
		leaders bool // allowed
	}{
		{"synthetic", pruneLog(true), 4, false},
		{"synthetic without ASR", pruneLog(false), 4, false},
		{"shared step", atSteps(true, map[string]int{"2": 46, "4": 46, "10": 48, "30": 54}), 3, false},
		{"shared steps", atSteps(true, map[string]int{"1": 45, "2": 45, "3": 48, "4": 48, "5": 51}), 3, false},
		{"crowded", atSteps(true, crowded), 5, false},
		{"crowded without ASR", atSteps(false, crowded), 5, false},
		{"packed", packedLog(), 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ov, err := pruneCurve(tc.log)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := render(p, ".png"); err != nil {
				t.Fatal(err)
			}
			if len(ov.laid) != tc.lines {
				t.Fatalf("%d labels, want %d", len(ov.laid), tc.lines)
			}
			const eps = 1e-6
			for i, l := range ov.laid {
				mx := l.pt.X
				for j, o := range ov.laid {
					if j == i {
						continue
					}
					if o.pt.X == mx {
						t.Errorf("%q and %q on the same mark", l.text, o.text)
					}
					if overlaps(l.r, o.r) {
						t.Errorf("%q overlaps %q", l.text, o.text)
					}
				}
				if l.leader {
					if !tc.leaders {
						t.Errorf("%q placed with a leader", l.text)
					}
					if d := l.pt.Sub(l.ends[1]); math.Abs(math.Hypot(float64(d.X), float64(d.Y))-leaderGap) > eps {
						t.Errorf("leader of %q ends at %v, not by its point %v", l.text, l.ends[1], l.pt)
					}
					continue
				}
				switch {
				case l.r.Min.X >= mx && l.r.Min.X-mx > markGap+eps,
					l.r.Max.X <= mx && mx-l.r.Max.X > markGap+eps:
					t.Errorf("%q at %v, not beside its mark at x=%v", l.text, l.r, mx)
				}
				lo, hi := min(mx, l.r.Min.X), max(mx, l.r.Max.X)
				for _, o := range ov.laid {
					if o.pt.X != mx && o.pt.X >= lo && o.pt.X <= hi {
						t.Errorf("%q at %v reaches over the mark of %q at x=%v", l.text, l.r, o.text, o.pt.X)
					}
				}
			}
		})
	}
}

// packedLog returns a log of 150 channels with networks saved at five
// consecutive steps, too close for labels at their marks.
func packedLog() *report.PruneLog {
	log := &report.PruneLog{Layer: "conv_3", BaseAcc: 98, BaseASR: ptr(100), Saved: map[string]report.Saved{}}
	for i := 1; i <= 150; i++ {
		acc := 98 - 2e-5*math.Pow(float64(max(i-60, 0)), 3)
		asr := 100 - 3*float64(max(i-100, 0))
		log.Steps = append(log.Steps, report.Step{Step: i, Fraction: float64(i) / 150, Valid: report.Valid{ValidAcc: math.Max(acc, 1), ValidASR: ptr(math.Max(asr, 0))}})
	}
	for i, k := range []string{"1", "2", "3", "4", "5"} {
		s := log.Steps[90+i]
		log.Saved[k] = report.Saved{Step: s.Step, Valid: s.Valid}
	}
	return log
}

func TestSave(t *testing.T) {
	figs := figures(t)
	for name, p := range figs {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			paths, err := Save(p, dir, name, false)
			if err != nil {
				t.Fatalf("Save: %v", err)
			}
			want := []string{filepath.Join(dir, name+".png"), filepath.Join(dir, name+".svg")}
			if strings.Join(paths, "|") != strings.Join(want, "|") {
				t.Fatalf("paths %q, want %q", paths, want)
			}
			checkPNG(t, paths[0])
			svg := checkSVG(t, paths[1])
			for _, s := range wantText[name] {
				if !strings.Contains(svg, escapeSVG(s)) {
					t.Errorf("%s lacks %q", paths[1], s)
				}
			}
			if name == "prune_shared" && strings.Contains(svg, escapeSVG("B'_2: ")) {
				t.Errorf("%s labels B'_2 apart from B'_4, saved at the same step", paths[1])
			}
			if name == "goodnet" && !strings.Contains(svg, ">B</text>") {
				t.Errorf("%s lacks the group B", paths[1])
			}
			checkNoTemp(t, dir)
		})
	}
}

// wantText is text each figure must show.
var wantText = map[string][]string{
	"prune_curve": {
		"Pruning conv_3: accuracy and attack success",
		"clean validation accuracy", "attack success rate",
		"channels of conv_3 pruned (%)", "rate (%)",
		"B'_2: −2 pts", "B'_4: −4 pts", "B'_10: −10 pts", "B'_30: −30 pts",
	},
	"prune_shared": {
		"B'_2, B'_4: −2/−4 pts", "B'_10: −10 pts", "B'_30: −30 pts",
	},
	"goodnet": {
		"GoodNet G(B, B'): clean accuracy and attack success",
		"clean accuracy", "attack success rate", "rate (%)",
		"B'_2", "B'_4", "95.7", "91.8",
	},
	"finetune": {
		"Fine-tuning: holdout accuracy and attack success",
		"epoch", "rate (%)", "B'_4", "B'_10", "holdout accuracy", "holdout attack success rate",
	},
}

// escapeSVG escapes s as vgsvg writes text.
func escapeSVG(s string) string {
	return strings.NewReplacer("'", "&#39;", "&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	if b := testfile.DecodePNG(t, path).Bounds(); b.Dx() < 600 || b.Dy() < 300 {
		t.Errorf("%s: image is %v", path, b)
	}
}

func checkSVG(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("<?xml")) && !bytes.HasPrefix(b, []byte("<svg")) {
		t.Errorf("%s starts with %q", path, b[:min(len(b), 20)])
	}
	if !bytes.Contains(b, []byte("<svg")) {
		t.Errorf("%s has no <svg element", path)
	}
	return string(b)
}

// checkNoTemp fails if dir holds anything but figures.
func checkNoTemp(t *testing.T, dir string) {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if ext := filepath.Ext(e.Name()); strings.HasPrefix(e.Name(), ".") || (ext != ".png" && ext != ".svg") {
			t.Errorf("%s left in %s", e.Name(), dir)
		}
	}
}

func TestSaveForce(t *testing.T) {
	figs := figures(t)
	dir := t.TempDir()
	paths, err := Save(figs["prune_curve"], dir, "fig", false)
	if err != nil {
		t.Fatal(err)
	}
	before := testfile.ReadAll(t, paths)

	// Another figure under the same name: refused, files untouched.
	_, err = Save(figs["goodnet"], dir, "fig", false)
	if err == nil {
		t.Fatal("second Save without force succeeded")
	}
	if want := paths[0] + ": already exists (use --force to overwrite)"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if after := testfile.ReadAll(t, paths); !equal(before, after) {
		t.Error("refused Save changed the files")
	}
	checkNoTemp(t, dir)

	// Only the SVG in the way: still refused before writing the PNG.
	if err := os.Remove(paths[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := Save(figs["goodnet"], dir, "fig", false); err == nil || !strings.Contains(err.Error(), paths[1]) {
		t.Errorf("Save over an existing SVG: error %v", err)
	}
	if _, err := os.Stat(paths[0]); err == nil {
		t.Error("refused Save wrote the PNG")
	}

	if _, err := Save(figs["goodnet"], dir, "fig", true); err != nil {
		t.Fatalf("Save with force: %v", err)
	}
	after := testfile.ReadAll(t, paths)
	if bytes.Equal(before[1], after[1]) {
		t.Error("Save with force left the old SVG")
	}
	checkPNG(t, paths[0])
	checkNoTemp(t, dir)
}

func TestSaveErrors(t *testing.T) {
	p, err := PruneCurve(pruneLog(true))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		p       *plot.Plot
		dir     string
		file    string
		wantErr string
	}{
		{"nil plot", nil, dir, "fig", "no plot"},
		{"empty name", p, dir, "", "not a file name"},
		{"name with folder", p, dir, "a/fig", "not a file name"},
		{"missing folder", p, filepath.Join(dir, "missing"), "fig", "cannot write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Save(tc.p, tc.dir, tc.file, false)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
			checkNoTemp(t, dir)
		})
	}
	if es, _ := os.ReadDir(dir); len(es) != 0 {
		t.Errorf("failed saves left %d files", len(es))
	}
}

func equal(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func TestWithoutASR(t *testing.T) {
	dir := t.TempDir()
	prune, bars := pruneAndBars(t, false)
	for name, p := range map[string]*plot.Plot{"prune": prune, "bars": bars} {
		paths, err := Save(p, dir, name, false)
		if err != nil {
			t.Fatal(err)
		}
		checkPNG(t, paths[0])
		svg := checkSVG(t, paths[1])
		if strings.Contains(svg, "attack success rate") {
			t.Errorf("%s: attack success drawn without data", name)
		}
	}
}

func TestInputErrors(t *testing.T) {
	noSteps := pruneLog(true)
	noSteps.Steps = nil
	nanStep := pruneLog(true)
	nanStep.Steps[10].ValidAcc = math.NaN()
	nanASR := pruneLog(true)
	nanASR.Steps[3].ValidASR = ptr(math.NaN())
	badFrac := pruneLog(true)
	badFrac.Steps[5].Fraction = 1.5
	lostStep := pruneLog(true)
	lostStep.Order = nil
	s := lostStep.Saved["4"]
	s.Step = 99
	lostStep.Saved["4"] = s
	noHistory := pruneLog(true)

	noB := eval(true)
	noB.Results = noB.Results[1:]
	nanAcc := eval(true)
	nanAcc.Results[2].CleanAcc = math.NaN()
	fraction := eval(true)
	fraction.Results[0].ASR = ptr(120)

	for _, tc := range []struct {
		name    string
		draw    func() (*plot.Plot, error)
		wantErr string
	}{
		{"prune nil", func() (*plot.Plot, error) { return PruneCurve(nil) }, "no prune log"},
		{"prune empty", func() (*plot.Plot, error) { return PruneCurve(&report.PruneLog{}) }, "no steps"},
		{"prune no steps", func() (*plot.Plot, error) { return PruneCurve(noSteps) }, "no steps"},
		{"prune NaN accuracy", func() (*plot.Plot, error) { return PruneCurve(nanStep) }, "step 11: validation accuracy is NaN"},
		{"prune NaN ASR", func() (*plot.Plot, error) { return PruneCurve(nanASR) }, "step 4: attack success rate is NaN"},
		{"prune bad fraction", func() (*plot.Plot, error) { return PruneCurve(badFrac) }, "step 6: fraction pruned is 1.5"},
		{"prune saved step missing", func() (*plot.Plot, error) { return PruneCurve(lostStep) }, "threshold 4: step 99 is not in the log"},
		{"finetune none", func() (*plot.Plot, error) { return FinetuneHistory(noHistory) }, "no saved network has a fine-tuning history"},
		{"finetune nil", func() (*plot.Plot, error) { return FinetuneHistory(nil) }, "no prune log"},
		{"bars nil", func() (*plot.Plot, error) { return GoodnetBars(nil) }, "no eval"},
		{"bars empty", func() (*plot.Plot, error) { return GoodnetBars(&report.Eval{}) }, "no results"},
		{"bars no B", func() (*plot.Plot, error) { return GoodnetBars(noB) }, "no row for the backdoored network B"},
		{"bars NaN", func() (*plot.Plot, error) { return GoodnetBars(nanAcc) }, "row 3 (G): clean accuracy is NaN"},
		{"bars out of range", func() (*plot.Plot, error) { return GoodnetBars(fraction) }, "row 1 (B): attack success rate is 120"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.draw()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if p != nil {
				t.Error("plot returned with an error")
			}
		})
	}
}

func TestRepairedName(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"repaired_4.h5", "B'_4"},
		{"out/dir/repaired_2.5.h5", "B'_2.5"},
		{"repaired_.h5", "repaired_.h5"},
		{"models/fixed.h5", "fixed.h5"},
	} {
		if got := report.NetworkLabel(tc.file); got != tc.want {
			t.Errorf("report.NetworkLabel(%q) = %q, want %q", tc.file, got, tc.want)
		}
	}
}

// TestWriteFigures writes the figures of the synthetic data to
// $BADPRUNE_PLOT_DIR, for looking at them.
func TestWriteFigures(t *testing.T) {
	dir := os.Getenv("BADPRUNE_PLOT_DIR")
	if dir == "" {
		t.Skip("BADPRUNE_PLOT_DIR not set")
	}
	for name, p := range figures(t) {
		if _, err := Save(p, dir, name, true); err != nil {
			t.Fatal(err)
		}
	}
}

package plot

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"badprune/internal/report"
)

// PruneCurve plots the clean validation accuracy and, when the log has it,
// the attack success rate against the percentage of channels of the pruned
// layer removed, starting from the unpruned network. Each saved repaired
// network is marked by a dashed vertical line at its step, labelled with
// its threshold; networks saved at the same step share one line and one
// label.
func PruneCurve(log *report.PruneLog) (*plot.Plot, error) {
	p, _, err := pruneCurve(log)
	return p, err
}

// pruneCurve is PruneCurve, also returning the overlay of the legend and
// the marks.
func pruneCurve(log *report.PruneLog) (*plot.Plot, *overlay, error) {
	if log == nil {
		return nil, nil, errors.New("plot prune curve: no prune log")
	}
	acc, asr, err := curves(log)
	if err != nil {
		return nil, nil, fmt.Errorf("plot prune curve: %w", err)
	}
	marks, err := savedMarks(log)
	if err != nil {
		return nil, nil, fmt.Errorf("plot prune curve: %w", err)
	}

	title, xlabel := "Pruning", "channels pruned (%)"
	if log.Layer != "" {
		title = "Pruning " + log.Layer
		xlabel = "channels of " + log.Layer + " pruned (%)"
	}
	if len(asr) > 0 {
		title += ": accuracy and attack success"
	} else {
		title += ": accuracy"
	}
	p := newPlot(title, xlabel, true)
	p.X.Min, p.X.Max = 0, 100
	p.X.Tick.Marker = linearTicks(0, 100, 10, 5)

	ov := &overlay{}
	var drawn []plotter.XYs
	add := func(xys plotter.XYs, c rgb, dash bool, name string) error {
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("plot prune curve: %s: %w", name, err)
		}
		l.LineStyle = lineStyle(c, dash)
		p.Add(l)
		drawn = append(drawn, xys)
		ov.entries = append(ov.entries, entry{name, []plot.Thumbnailer{l}})
		return nil
	}
	if err := add(acc, blue, false, "clean validation accuracy"); err != nil {
		return nil, nil, err
	}
	if len(asr) > 0 {
		if err := add(asr, vermillion, true, "attack success rate"); err != nil {
			return nil, nil, err
		}
	}

	// Dots where the saved networks sit on the curves.
	var dots plotter.XYs
	for _, m := range marks {
		dots = append(dots, plotter.XY{X: m.x, Y: m.acc})
		if m.asr != nil {
			dots = append(dots, plotter.XY{X: m.x, Y: *m.asr})
		}
	}
	ov.marks = markLines(marks)
	if len(dots) > 0 {
		s, err := plotter.NewScatter(dots)
		if err != nil {
			return nil, nil, fmt.Errorf("plot prune curve: saved networks: %w", err)
		}
		s.GlyphStyle = draw.GlyphStyle{Color: black, Radius: vg.Points(2.5), Shape: draw.CircleGlyph{}}
		p.Add(s)
		markLine := draw.LineStyle{Color: grey, Width: vg.Points(1), Dashes: dashed()}
		ov.entries = append(ov.entries, entry{"saved repaired network B'_X", []plot.Thumbnailer{vline(markLine), s}})
	}

	ov.avoid = func(x, y func(float64) vg.Length) obstacles {
		obs := lineObstacles(drawn, x, y, 0)
		for _, d := range dots {
			obs.rects = append(obs.rects, around(vg.Point{X: x(d.X), Y: y(d.Y)}, vg.Points(4)))
		}
		return obs
	}
	p.Add(ov)
	return p, ov, nil
}

// curves returns the accuracy and attack success points, in percent of
// channels; asr is empty when the log has no attack success.
func curves(log *report.PruneLog) (acc, asr plotter.XYs, err error) {
	if len(log.Steps) == 0 {
		return nil, nil, errors.New("prune log has no steps")
	}
	if err := checkRate("base accuracy", log.BaseAcc); err != nil {
		return nil, nil, err
	}
	if log.BaseASR != nil {
		if err := checkRate("base attack success rate", *log.BaseASR); err != nil {
			return nil, nil, err
		}
	}
	// The unpruned network is the first point, unless the log starts
	// with it already.
	if log.Steps[0].Fraction != 0 {
		acc = append(acc, plotter.XY{X: 0, Y: log.BaseAcc})
		if log.BaseASR != nil {
			asr = append(asr, plotter.XY{X: 0, Y: *log.BaseASR})
		}
	}
	for i, s := range log.Steps {
		if math.IsNaN(s.Fraction) || s.Fraction < 0 || s.Fraction > 1 {
			return nil, nil, fmt.Errorf("step %d: fraction pruned is %v, not in 0..1", i+1, s.Fraction)
		}
		if err := checkRate(fmt.Sprintf("step %d: validation accuracy", i+1), s.ValidAcc); err != nil {
			return nil, nil, err
		}
		acc = append(acc, plotter.XY{X: 100 * s.Fraction, Y: s.ValidAcc})
		if s.ValidASR != nil {
			if err := checkRate(fmt.Sprintf("step %d: attack success rate", i+1), *s.ValidASR); err != nil {
				return nil, nil, err
			}
			asr = append(asr, plotter.XY{X: 100 * s.Fraction, Y: *s.ValidASR})
		}
	}
	return acc, asr, nil
}

// savedPoint is where a saved network sits on the curves.
type savedPoint struct {
	x, acc float64
	asr    *float64
	key    string // threshold
	label  string
}

// savedLabel labels the networks saved for the thresholds keys at one step:
// "B'_10: −10 pts", or "B'_2, B'_4: −2/−4 pts".
func savedLabel(keys []string) string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = "B'_" + k
	}
	return strings.Join(names, ", ") + ": −" + strings.Join(keys, "/−") + " pts"
}

// markLines returns one mark for each step at which networks were saved, in
// the order of pts, labelled with all the networks saved there.
func markLines(pts []savedPoint) []mark {
	var marks []mark
	var keys [][]string
	for _, p := range pts {
		i := slices.IndexFunc(marks, func(m mark) bool { return m.x == p.x })
		if i < 0 {
			marks = append(marks, mark{x: p.x, y: p.acc})
			keys = append(keys, nil)
			i = len(marks) - 1
		}
		keys[i] = append(keys[i], p.key)
	}
	for i := range marks {
		marks[i].label = savedLabel(keys[i])
	}
	return marks
}

// savedMarks returns the saved networks in increasing order of threshold.
func savedMarks(log *report.PruneLog) ([]savedPoint, error) {
	keys, err := sortedSaved(log)
	if err != nil {
		return nil, err
	}
	var pts []savedPoint
	for _, k := range keys {
		s := log.Saved[k]
		f, err := savedFraction(log, s)
		if err != nil {
			return nil, fmt.Errorf("saved network for threshold %s: %w", k, err)
		}
		if err := checkRate("saved network for threshold "+k+": validation accuracy", s.ValidAcc); err != nil {
			return nil, err
		}
		if s.ValidASR != nil {
			if err := checkRate("saved network for threshold "+k+": attack success rate", *s.ValidASR); err != nil {
				return nil, err
			}
		}
		pts = append(pts, savedPoint{x: 100 * f, acc: s.ValidAcc, asr: s.ValidASR, key: k, label: savedLabel([]string{k})})
	}
	return pts, nil
}

// savedFraction returns the fraction of channels pruned in a saved network:
// that of its step, or, when the log lacks the step, the share of the
// layer's channels it lists as pruned.
func savedFraction(log *report.PruneLog, s report.Saved) (float64, error) {
	for _, st := range log.Steps {
		if st.Step == s.Step {
			return st.Fraction, nil
		}
	}
	if s.Step == 0 {
		return 0, nil
	}
	if n := len(log.Order); n > 0 && len(s.Pruned) <= n {
		return float64(len(s.Pruned)) / float64(n), nil
	}
	return 0, fmt.Errorf("step %d is not in the log", s.Step)
}

// vline is a legend thumbnail of a vertical line.
type vline draw.LineStyle

// Thumbnail implements plot.Thumbnailer.
func (l vline) Thumbnail(c *draw.Canvas) {
	x := (c.Min.X + c.Max.X) / 2
	c.StrokeLine2(draw.LineStyle(l), x, c.Min.Y, x, c.Max.Y)
}

// sortedSaved returns the keys of the saved networks, numeric thresholds in
// increasing order first.
func sortedSaved(log *report.PruneLog) ([]string, error) {
	type key struct {
		text string
		v    float64
		num  bool
	}
	ks := make([]key, 0, len(log.Saved))
	for k := range log.Saved {
		v, err := strconv.ParseFloat(k, 64)
		if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
			return nil, fmt.Errorf("saved network threshold %q is not a number", k)
		}
		ks = append(ks, key{k, v, err == nil})
	}
	sort.Slice(ks, func(i, j int) bool {
		a, b := ks[i], ks[j]
		if a.num != b.num {
			return a.num
		}
		if a.num && a.v != b.v {
			return a.v < b.v
		}
		return a.text < b.text
	})
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.text
	}
	return out, nil
}

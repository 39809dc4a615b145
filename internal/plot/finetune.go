package plot

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"badprune/internal/report"
)

// FinetuneHistory plots, for each saved repaired network that was fine-tuned,
// its holdout accuracy (solid) and attack success (dashed) after each epoch,
// one colour per network. It is an error if no network has a history.
func FinetuneHistory(log *report.PruneLog) (*plot.Plot, error) {
	if log == nil {
		return nil, errors.New("plot fine-tuning history: no prune log")
	}
	keys, err := sortedSaved(log)
	if err != nil {
		return nil, fmt.Errorf("plot fine-tuning history: %w", err)
	}
	p := newPlot("Fine-tuning: holdout accuracy and attack success", "epoch", true)
	ov := &overlay{}
	var drawn []plotter.XYs
	lo, hi := math.Inf(1), math.Inf(-1)
	withASR := false
	for _, k := range keys {
		ft := log.Saved[k].Finetune
		if ft == nil || len(ft.Epochs) == 0 {
			continue
		}
		col := series(len(drawn))
		var acc, asr plotter.XYs
		for i, e := range ft.Epochs {
			what := fmt.Sprintf("saved network for threshold %s: epoch %d", k, i+1)
			if err := checkRate(what+": holdout accuracy", e.HoldoutAcc); err != nil {
				return nil, fmt.Errorf("plot fine-tuning history: %w", err)
			}
			x := float64(e.Epoch)
			lo, hi = min(lo, x), max(hi, x)
			acc = append(acc, plotter.XY{X: x, Y: e.HoldoutAcc})
			if e.HoldoutASR != nil {
				if err := checkRate(what+": holdout attack success rate", *e.HoldoutASR); err != nil {
					return nil, fmt.Errorf("plot fine-tuning history: %w", err)
				}
				asr = append(asr, plotter.XY{X: x, Y: *e.HoldoutASR})
			}
		}
		var thumb plot.Thumbnailer
		for _, c := range []struct {
			xys  plotter.XYs
			dash bool
		}{{acc, false}, {asr, true}} {
			if len(c.xys) == 0 {
				continue
			}
			// Points as well as lines, so that a single epoch shows.
			l, s, err := plotter.NewLinePoints(c.xys)
			if err != nil {
				return nil, fmt.Errorf("plot fine-tuning history: threshold %s: %w", k, err)
			}
			l.LineStyle = lineStyle(col, c.dash)
			s.GlyphStyle = draw.GlyphStyle{Color: col, Radius: vg.Points(2), Shape: draw.CircleGlyph{}}
			p.Add(l, s)
			drawn = append(drawn, c.xys)
			if thumb == nil {
				thumb = l
			}
		}
		withASR = withASR || len(asr) > 0
		ov.entries = append(ov.entries, entry{"B'_" + k, []plot.Thumbnailer{thumb}})
	}
	if len(drawn) == 0 {
		return nil, errors.New("plot fine-tuning history: no saved network has a fine-tuning history")
	}
	if !withASR {
		p.Title.Text = "Fine-tuning: holdout accuracy"
	}
	// A key to the line styles, after the networks.
	ov.entries = append(ov.entries, entry{"holdout accuracy", []plot.Thumbnailer{thumbLine(lineStyle(black, false))}})
	if withASR {
		ov.entries = append(ov.entries, entry{"holdout attack success rate", []plot.Thumbnailer{thumbLine(lineStyle(black, true))}})
	}

	// Whole epochs only, with a little room at the ends for the points.
	p.X.Min, p.X.Max = lo-0.3, hi+0.3
	step := math.Max(1, math.Ceil((hi-lo)/10))
	var ticks plot.ConstantTicks
	for e := lo; e <= hi; e += step {
		ticks = append(ticks, plot.Tick{Value: e, Label: trimFloat(e)})
	}
	p.X.Tick.Marker = ticks

	ov.avoid = func(x, y func(float64) vg.Length) obstacles {
		return lineObstacles(drawn, x, y, vg.Points(3))
	}
	p.Add(ov)
	return p, nil
}

// thumbLine is a legend thumbnail of a horizontal line.
type thumbLine draw.LineStyle

// Thumbnail implements plot.Thumbnailer.
func (l thumbLine) Thumbnail(c *draw.Canvas) {
	y := (c.Min.Y + c.Max.Y) / 2
	c.StrokeLine2(draw.LineStyle(l), c.Min.X, y, c.Max.X, y)
}

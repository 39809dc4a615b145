package plot

import (
	"errors"
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"

	"badprune/internal/report"
)

// Bar geometry for the figure size Save uses; bars are sized in points, so
// they keep these proportions only at about that size.
const (
	nominalWidth = width - vg.Inch // of the data area
	barShare     = 0.34            // of a group's width, per bar
	maxBar       = 60              // points
)

// group is one cluster of bars.
type group struct {
	name string
	acc  float64
	asr  *float64
}

// GoodnetBars plots, per repaired network, the clean accuracy and attack
// success of its GoodNet G(B, B'), after the backdoored network B itself for
// reference. Networks come in the order of the eval's rows and are named
// after their files (repaired_4.h5 is B'_4). Attack success is drawn only
// when the eval has it.
func GoodnetBars(ev *report.Eval) (*plot.Plot, error) {
	gs, err := groups(ev)
	if err != nil {
		return nil, fmt.Errorf("plot goodnet bars: %w", err)
	}
	withASR := false
	for _, g := range gs {
		withASR = withASR || g.asr != nil
	}

	title := "GoodNet G(B, B'): clean accuracy"
	if withASR {
		title += " and attack success"
	}
	p := newPlot(title, "B: backdoored network;  B'_X: GoodNet of B and the repaired B'_X", false)
	// Room above the bars for their values and the legend.
	p.Y.Min, p.Y.Max = 0, 122
	p.X.Min, p.X.Max = -0.6, float64(len(gs)-1)+0.6
	names := make([]string, len(gs))
	for i, g := range gs {
		names[i] = g.name
	}
	p.NominalX(names...)
	p.X.Tick.Label.Font.Size = vg.Points(12)

	w := min(vg.Points(maxBar), nominalWidth/vg.Length(float64(len(gs))+0.2)*barShare)
	type bars struct {
		vals   plotter.Values
		labels []string
		offset vg.Length
	}
	acc := bars{offset: 0}
	asr := bars{offset: w / 2}
	if withASR {
		acc.offset = -w / 2
	}
	for _, g := range gs {
		acc.vals = append(acc.vals, g.acc)
		acc.labels = append(acc.labels, percent(g.acc))
		if g.asr != nil {
			asr.vals = append(asr.vals, *g.asr)
			asr.labels = append(asr.labels, percent(*g.asr))
		} else {
			// Keep the slot so that bars stay in their groups.
			asr.vals = append(asr.vals, 0)
			asr.labels = append(asr.labels, "n/a")
		}
	}

	ov := &overlay{}
	series := []struct {
		bars
		c    rgb
		name string
	}{{acc, blue, "clean accuracy"}, {asr, vermillion, "attack success rate"}}
	if !withASR {
		series = series[:1]
	}
	var valueLabels []*plotter.Labels
	for _, s := range series {
		b, err := plotter.NewBarChart(s.vals, w)
		if err != nil {
			return nil, fmt.Errorf("plot goodnet bars: %s: %w", s.name, err)
		}
		b.Color = s.c
		b.LineStyle.Width = 0
		b.Offset = s.offset
		p.Add(b)
		ov.entries = append(ov.entries, entry{s.name, []plot.Thumbnailer{b}})

		xys := make(plotter.XYs, len(s.vals))
		for i, v := range s.vals {
			xys[i] = plotter.XY{X: float64(i), Y: v}
		}
		l, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: s.labels})
		if err != nil {
			return nil, fmt.Errorf("plot goodnet bars: %s values: %w", s.name, err)
		}
		for i := range l.TextStyle {
			l.TextStyle[i].XAlign = text.XCenter
			l.TextStyle[i].YAlign = text.YBottom
			l.TextStyle[i].Font.Size = vg.Points(10)
		}
		l.Offset = vg.Point{X: s.offset, Y: vg.Points(2)}
		p.Add(l)
		valueLabels = append(valueLabels, l)
	}

	ov.avoid = func(x, y func(float64) vg.Length) obstacles {
		var obs obstacles
		for si, s := range series {
			l := valueLabels[si]
			for i, v := range s.vals {
				cx := x(float64(i)) + s.offset
				top := y(v) + l.Offset.Y + l.TextStyle[i].Rectangle(s.labels[i]).Size().Y
				obs.rects = append(obs.rects, vg.Rectangle{
					Min: vg.Point{X: cx - w/2, Y: y(0)},
					Max: vg.Point{X: cx + w/2, Y: top},
				})
			}
		}
		return obs
	}
	p.Add(ov)
	return p, nil
}

// groups returns B, then each repaired network's GoodNet, in row order.
func groups(ev *report.Eval) ([]group, error) {
	if ev == nil {
		return nil, errors.New("no eval")
	}
	if len(ev.Results) == 0 {
		return nil, errors.New("eval has no results")
	}
	var gs []group
	var b *report.Row
	for i := range ev.Results {
		r := &ev.Results[i]
		what := fmt.Sprintf("row %d (%s)", i+1, r.Model)
		if err := checkRate(what+": clean accuracy", r.CleanAcc); err != nil {
			return nil, err
		}
		if r.ASR != nil {
			if err := checkRate(what+": attack success rate", *r.ASR); err != nil {
				return nil, err
			}
		}
		switch r.Model {
		case report.RoleB:
			if b == nil {
				b = r
			}
		case report.RoleGoodNet:
			file := r.Repaired
			if file == "" {
				file = r.File
			}
			name := report.NetworkLabel(file)
			if file == "" {
				name = fmt.Sprintf("G_%d", len(gs)+1)
			}
			gs = append(gs, group{name: name, acc: r.CleanAcc, asr: r.ASR})
		}
	}
	if b == nil {
		return nil, errors.New("eval has no row for the backdoored network B")
	}
	return append([]group{{name: "B", acc: b.CleanAcc, asr: b.ASR}}, gs...), nil
}

// percent formats a rate with one decimal, or two where one would round it
// to 0 or 100: an attack that succeeds on 99.97% of inputs has not
// succeeded on all of them.
func percent(v float64) string {
	if (v > 99.95 && v < 100) || (v > 0 && v < 0.05) {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

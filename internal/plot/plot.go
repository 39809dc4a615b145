// Package plot draws badprune's figures: the pruning curve of repair
// (validation accuracy and attack success against the fraction of channels
// pruned, with the saved repaired networks marked), the clean accuracy and
// attack success of the GoodNets of eval, and the fine-tuning history, and
// saves them as PNG and SVG.
//
// The figures are gonum plots; text that gonum cannot place by itself (the
// legend and the threshold labels) is laid out when the plot is drawn, once
// the size of the canvas is known, so that it avoids the data and itself.
package plot

import (
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// rgb is an opaque colour written as 0xRRGGBB, so that the palette can be
// constants rather than package variables.
type rgb uint32

// RGBA implements color.Color.
func (c rgb) RGBA() (r, g, b, a uint32) {
	r = uint32(c>>16&0xff) * 0x101
	g = uint32(c>>8&0xff) * 0x101
	b = uint32(c&0xff) * 0x101
	return r, g, b, 0xffff
}

// Colours of the Okabe-Ito palette, distinguishable with colour blindness.
const (
	blue       rgb = 0x0072b2
	vermillion rgb = 0xd55e00
	green      rgb = 0x009e73
	purple     rgb = 0xcc79a7
	orange     rgb = 0xe69f00
	skyBlue    rgb = 0x56b4e9
	black      rgb = 0x000000
	grey       rgb = 0x6e6e6e
	lightGrey  rgb = 0xb4b4b4
	gridGrey   rgb = 0xe6e6e6
)

// series returns the colour of the i-th of several networks.
func series(i int) color.Color {
	cs := [...]rgb{green, purple, orange, skyBlue, blue, vermillion, black}
	return cs[i%len(cs)]
}

// dashed is the dash pattern of attack success lines and threshold marks.
func dashed() []vg.Length { return []vg.Length{vg.Points(5), vg.Points(3)} }

// newPlot returns a plot with the axes shared by all figures: a rate in
// percent on y, with a little room beyond 0 and 100 so that lines at the
// limits stay visible, and a light grid, vertical lines only if vgrid.
func newPlot(title, xlabel string, vgrid bool) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(14)
	p.Title.Padding = vg.Points(8)
	p.X.Label.Text = xlabel
	p.Y.Label.Text = "rate (%)"
	p.Y.Min, p.Y.Max = -3, 105
	p.Y.Tick.Marker = linearTicks(0, 100, 20, 10)
	grid := plotter.NewGrid()
	grid.Vertical.Color = gridGrey
	if !vgrid {
		// Between bars, vertical lines only add clutter.
		grid.Vertical.Color = nil
	}
	grid.Horizontal.Color = gridGrey
	p.Add(grid)
	return p
}

// linearTicks labels every major step from lo to hi, with unlabelled minor
// ticks in between; ticks stop at hi even when the axis extends beyond it.
func linearTicks(lo, hi, major, minor float64) plot.ConstantTicks {
	var ts plot.ConstantTicks
	n := int(math.Round((hi - lo) / minor))
	for i := 0; i <= n; i++ {
		v := lo + float64(i)*minor
		t := plot.Tick{Value: v}
		if r := math.Mod(v-lo, major); math.Abs(r) < 1e-9 || math.Abs(r-major) < 1e-9 {
			t.Label = trimFloat(v)
		}
		ts = append(ts, t)
	}
	return ts
}

// trimFloat formats v without trailing zeros.
func trimFloat(v float64) string {
	return fmt.Sprintf("%.4g", v)
}

// checkRate reports an error unless v is a percentage.
func checkRate(what string, v float64) error {
	// A tolerance for rounding; fractions in 0..1 pass, but cannot be told
	// from small percentages.
	if math.IsNaN(v) || v < -1e-6 || v > 100+1e-6 {
		return fmt.Errorf("%s is %v, not a percentage in 0..100", what, v)
	}
	return nil
}

// lineStyle returns a line style of the given colour, dashed if asked.
func lineStyle(c color.Color, dash bool) draw.LineStyle {
	ls := draw.LineStyle{Color: c, Width: vg.Points(1.6)}
	if dash {
		ls.Dashes = dashed()
	}
	return ls
}

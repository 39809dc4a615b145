package plot

import (
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// entry is one line of a legend.
type entry struct {
	text   string
	thumbs []plot.Thumbnailer
}

// mark is a vertical line at x, in data units, labelled near the line and,
// space permitting, near height y.
type mark struct {
	x, y  float64
	label string
}

// obstacles is what the legend and labels should not cover, in canvas
// units.
type obstacles struct {
	segs  [][2]vg.Point // data lines
	rects []vg.Rectangle
}

// overlay draws a legend and labelled vertical marks over the data. It is
// added to a plot last, and chooses the positions of its boxes only when
// drawn, because only then are the size of the canvas, and so the room
// that text takes in data units, known. gonum's own Legend is left empty:
// it can only sit in a fixed corner and has no background, so it would
// cover the curves.
type overlay struct {
	entries []entry
	marks   []mark
	// avoid returns the obstacles, given the transforms of the canvas.
	avoid func(x, y func(float64) vg.Length) obstacles
}

// Layout constants, in points.
const (
	inset    = 6   // between boxes and the edge of the data area
	boxPad   = 4   // between a box's edge and its content
	labelPad = 2   // same, for mark labels
	markGap  = 3   // between a mark and its label
	entrySep = 2   // between legend entries
	thumbW   = 24  // width of legend thumbnails
	legendPt = 11  // legend font size
	labelPt  = 9.5 // mark label font size
)

// Costs of covering things; the position of least cost wins, ties going to
// the earlier candidate.
const (
	costBox   = 1e6 // another label or the legend
	costData  = 1e3 // a data line segment or bar
	costMark  = 5   // another mark's line
	costFar   = 0.5 // per label height away from the mark's y
	costOrder = 1e-3
)

// Plot implements plot.Plotter.
func (o *overlay) Plot(c draw.Canvas, p *plot.Plot) {
	x, y := p.Transforms(&c)
	var obs obstacles
	if o.avoid != nil {
		obs = o.avoid(x, y)
	}

	markStyle := draw.LineStyle{Color: grey, Width: vg.Points(1), Dashes: dashed()}
	var lines [][2]vg.Point
	for _, m := range o.marks {
		mx := x(m.x)
		if !c.ContainsX(mx) {
			continue
		}
		c.StrokeLine2(markStyle, mx, c.Min.Y, mx, c.Max.Y)
		lines = append(lines, [2]vg.Point{{X: mx, Y: c.Min.Y}, {X: mx, Y: c.Max.Y}})
	}

	var placed []vg.Rectangle
	if len(o.entries) > 0 {
		r := o.drawLegend(c, p, obs, lines)
		placed = append(placed, r)
	}

	sty := p.Legend.TextStyle
	sty.Font.Size = vg.Points(labelPt)
	sty.XAlign, sty.YAlign = text.XLeft, text.YBottom
	for _, m := range o.marks {
		mx := x(m.x)
		if !c.ContainsX(mx) {
			continue
		}
		tr := sty.Rectangle(m.label)
		w := tr.Size().X + 2*labelPad
		h := tr.Size().Y + 2*labelPad
		var cands []vg.Rectangle
		// Top to bottom in half-label steps, right of the line then left.
		for top := c.Max.Y - inset; top-h >= c.Min.Y+inset; top -= h / 2 {
			for _, left := range []vg.Length{mx + markGap, mx - markGap - w} {
				r := vg.Rectangle{Min: vg.Point{X: left, Y: top - h}, Max: vg.Point{X: left + w, Y: top}}
				if r.Min.X >= c.Min.X && r.Max.X <= c.Max.X {
					cands = append(cands, r)
				}
			}
		}
		others := lines[:0:0]
		for _, l := range lines {
			if l[0].X != mx {
				others = append(others, l)
			}
		}
		// Prefer the height of the mark's point, so that the label reads as
		// belonging to it.
		far := func(r vg.Rectangle) float64 {
			return costFar * math.Abs(float64((r.Min.Y+r.Max.Y)/2-y(m.y))) / float64(h)
		}
		r, ok := best(cands, obs, others, placed, far)
		if !ok {
			// The label is wider than the plot; let it overflow.
			r = vg.Rectangle{Min: vg.Point{X: mx + markGap, Y: c.Max.Y - inset - h}, Max: vg.Point{X: mx + markGap + w, Y: c.Max.Y - inset}}
		}
		placed = append(placed, r)
		c.FillPolygon(color.NRGBA{R: 255, G: 255, B: 255, A: 215}, corners(r))
		c.FillText(sty, vg.Point{X: r.Min.X + labelPad - tr.Min.X, Y: r.Min.Y + labelPad - tr.Min.Y}, m.label)
	}
}

// drawLegend draws the legend in the free-most of a few places along the
// edges of c and returns its box.
func (o *overlay) drawLegend(c draw.Canvas, p *plot.Plot, obs obstacles, lines [][2]vg.Point) vg.Rectangle {
	sty := p.Legend.TextStyle
	sty.Font.Size = vg.Points(legendPt)
	sty.XAlign, sty.YAlign = text.XLeft, text.YBottom
	em := sty.Rectangle("M").Size().X
	var tw, eh vg.Length
	for _, e := range o.entries {
		s := sty.Rectangle(e.text).Size()
		tw = max(tw, s.X)
		eh = max(eh, s.Y)
	}
	n := vg.Length(len(o.entries))
	w := 2*boxPad + thumbW + em/2 + tw
	h := 2*boxPad + n*eh + (n-1)*entrySep

	// Corners first, then the middles of the edges.
	l, r := c.Min.X+inset, c.Max.X-inset-w
	b, t := c.Min.Y+inset, c.Max.Y-inset-h
	mx, my := (c.Min.X+c.Max.X-w)/2, (c.Min.Y+c.Max.Y-h)/2
	var cands []vg.Rectangle
	for _, pt := range []vg.Point{{X: r, Y: t}, {X: l, Y: t}, {X: r, Y: b}, {X: l, Y: b}, {X: mx, Y: t}, {X: l, Y: my}, {X: r, Y: my}, {X: mx, Y: b}} {
		cands = append(cands, vg.Rectangle{Min: pt, Max: vg.Point{X: pt.X + w, Y: pt.Y + h}})
	}
	box, _ := best(cands, obs, lines, nil, nil)

	c.FillPolygon(color.NRGBA{R: 255, G: 255, B: 255, A: 235}, corners(box))
	c.StrokeLines(draw.LineStyle{Color: lightGrey, Width: vg.Points(0.5)}, append(corners(box), box.Min))
	top := box.Max.Y - boxPad
	for _, e := range o.entries {
		icon := draw.Canvas{Canvas: c.Canvas, Rectangle: vg.Rectangle{
			Min: vg.Point{X: box.Min.X + boxPad, Y: top - eh + eh/6},
			Max: vg.Point{X: box.Min.X + boxPad + thumbW, Y: top - eh/6},
		}}
		for _, th := range e.thumbs {
			th.Thumbnail(&icon)
		}
		tr := sty.Rectangle(e.text)
		c.FillText(sty, vg.Point{X: box.Min.X + boxPad + thumbW + em/2 - tr.Min.X, Y: top - eh - tr.Min.Y}, e.text)
		top -= eh + entrySep
	}
	return box
}

// best returns the candidate covering the least, extra adding a cost if not
// nil; ok is false without candidates.
func best(cands []vg.Rectangle, obs obstacles, lines [][2]vg.Point, placed []vg.Rectangle, extra func(vg.Rectangle) float64) (r vg.Rectangle, ok bool) {
	least := math.Inf(1)
	for i, cand := range cands {
		k := costOrder * float64(i)
		if extra != nil {
			k += extra(cand)
		}
		for _, q := range placed {
			if overlaps(cand, q) {
				k += costBox
			}
		}
		for _, q := range obs.rects {
			if overlaps(cand, q) {
				k += costData
			}
		}
		for _, s := range obs.segs {
			if crosses(cand, s[0], s[1]) {
				k += costData
			}
		}
		for _, s := range lines {
			if crosses(cand, s[0], s[1]) {
				k += costMark
			}
		}
		if k < least {
			least, r, ok = k, cand, true
		}
	}
	return r, ok
}

// polyline returns the segments joining consecutive points.
func polyline(pts []vg.Point) [][2]vg.Point {
	var segs [][2]vg.Point
	for i := 1; i < len(pts); i++ {
		segs = append(segs, [2]vg.Point{pts[i-1], pts[i]})
	}
	return segs
}

// corners returns the corners of r, anticlockwise from the lower left.
func corners(r vg.Rectangle) []vg.Point {
	return []vg.Point{r.Min, {X: r.Max.X, Y: r.Min.Y}, r.Max, {X: r.Min.X, Y: r.Max.Y}}
}

// overlaps reports whether a and b share an area.
func overlaps(a, b vg.Rectangle) bool {
	return a.Min.X < b.Max.X && b.Min.X < a.Max.X && a.Min.Y < b.Max.Y && b.Min.Y < a.Max.Y
}

// crosses reports whether the segment from a to b passes through r
// (Liang-Barsky clipping).
func crosses(r vg.Rectangle, a, b vg.Point) bool {
	t0, t1 := 0.0, 1.0
	dx, dy := float64(b.X-a.X), float64(b.Y-a.Y)
	ps := [4]float64{-dx, dx, -dy, dy}
	qs := [4]float64{float64(a.X - r.Min.X), float64(r.Max.X - a.X), float64(a.Y - r.Min.Y), float64(r.Max.Y - a.Y)}
	for i, p := range ps {
		q := qs[i]
		if p == 0 {
			if q < 0 {
				return false
			}
			continue
		}
		t := q / p
		if p < 0 {
			t0 = max(t0, t)
		} else {
			t1 = min(t1, t)
		}
		if t0 > t1 {
			return false
		}
	}
	return true
}

// around returns the square of half side r centred on p.
func around(p vg.Point, r vg.Length) vg.Rectangle {
	return vg.Rectangle{Min: vg.Point{X: p.X - r, Y: p.Y - r}, Max: vg.Point{X: p.X + r, Y: p.Y + r}}
}

package plot

import (
	"cmp"
	"image/color"
	"math"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// entry is one line of a legend.
type entry struct {
	text   string
	thumbs []plot.Thumbnailer
}

// mark is a vertical line at x, in data units, with a label attached to
// it: beside the line, else along it, else, as a last resort, joined by a
// leader to the line's point at height y, where the label also prefers to
// sit.
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
	// laid is where the mark labels went when last drawn.
	laid []placedLabel
}

// Layout constants, in points.
const (
	inset       = 6   // between boxes and the edge of the data area
	boxPad      = 4   // between a box's edge and its content
	labelPad    = 2   // same, for mark labels
	markGap     = 3   // between a mark and a label beside it
	markNear    = 9   // least room between a label and any other mark
	markClear   = 1   // same, for a label over its own mark
	leaderGap   = 3.5 // between the end of a leader and its point
	leaderClear = 2   // between a leader and the data it runs along
	entrySep    = 2   // between legend entries
	thumbW      = 24  // width of legend thumbnails
	legendPt    = 11  // legend font size
	labelPt     = 9.5 // mark label font size
)

// Costs of covering things; the position of least cost wins, ties going to
// the earlier candidate.
const (
	costBox   = 1e6 // another label or the legend
	costData  = 1e3 // a data line segment or bar
	costMark  = 5   // another mark's line
	costFar   = 0.5 // per label height away from the mark's y
	costOrder = 1e-3
	// A mark label never crosses another mark: it sits beside its own, or
	// along it if there is no room across, or away from it with a leader.
	costAlong    = 50  // along the mark rather than across
	costOver     = 10  // over the mark rather than beside it
	costLeader   = 1e4 // away from the mark, with a leader
	costNear     = 1e3 // a leader's label near or over another mark
	costLeadData = 100 // a leader crossing a data line
	costTangle   = 1e4 // a leader crossing another, or under a label
)

// Plot implements plot.Plotter.
func (o *overlay) Plot(c draw.Canvas, p *plot.Plot) {
	x, y := p.Transforms(&c)
	var obs obstacles
	if o.avoid != nil {
		obs = o.avoid(x, y)
	}

	// Marks at the same x are drawn once.
	markStyle := draw.LineStyle{Color: grey, Width: vg.Points(1), Dashes: dashed()}
	var lines [][2]vg.Point
	for _, m := range o.marks {
		mx := x(m.x)
		if !c.ContainsX(mx) || slices.ContainsFunc(lines, func(l [2]vg.Point) bool { return l[0].X == mx }) {
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
	o.laid = placeLabels(c, sty, o.marks, x, y, obs, placed)
	for _, l := range o.laid {
		if l.leader {
			c.StrokeLine2(draw.LineStyle{Color: grey, Width: vg.Points(0.75)}, l.ends[0].X, l.ends[0].Y, l.ends[1].X, l.ends[1].Y)
		}
		c.FillPolygon(color.NRGBA{R: 255, G: 255, B: 255, A: 215}, corners(l.r))
		c.FillText(l.sty, vg.Point{X: l.r.Min.X + labelPad - l.tr.Min.X, Y: l.r.Min.Y + labelPad - l.tr.Min.Y}, l.text)
	}
}

// placedLabel is where a mark's label goes, and how it is written.
type placedLabel struct {
	label
	pt   vg.Point // the mark's point
	text string
	sty  text.Style
	tr   vg.Rectangle // of the text about its anchor
	ends [2]vg.Point  // of the leader, if any
}

// placeLabels places the labels of the marks within the canvas c, in
// canvas units by x and y, written in sty, clear of obs and of the boxes
// already placed. They are placed from left to right, each among the
// places that keep it to its own mark.
func placeLabels(c draw.Canvas, sty text.Style, marks []mark, x, y func(float64) vg.Length, obs obstacles, placed []vg.Rectangle) []placedLabel {
	var xs []vg.Length // of the marks, once each
	for _, m := range marks {
		if mx := x(m.x); c.ContainsX(mx) && !slices.Contains(xs, mx) {
			xs = append(xs, mx)
		}
	}
	slices.Sort(xs)
	marks = slices.Clone(marks)
	slices.SortStableFunc(marks, func(a, b mark) int { return cmp.Compare(a.x, b.x) })
	along := sty
	along.Rotation = math.Pi / 2

	placed = slices.Clone(placed)
	var leaders [][2]vg.Point
	var out []placedLabel
	for _, m := range marks {
		mx, my := x(m.x), y(m.y)
		if !c.ContainsX(mx) {
			continue
		}
		// The nearest other marks, or far beyond the edges.
		prev, next := c.Min.X-markNear, c.Max.X+markNear
		var others [][2]vg.Point
		for _, v := range xs {
			if v < mx {
				prev = v
			} else if v > mx && next > c.Max.X {
				next = v
			}
			if v != mx {
				others = append(others, [2]vg.Point{{X: v, Y: c.Min.Y}, {X: v, Y: c.Max.Y}})
			}
		}
		pt := vg.Point{X: mx, Y: my}
		tr, ta := sty.Rectangle(m.label), along.Rectangle(m.label)
		across := tr.Size().Add(vg.Point{X: 2 * labelPad, Y: 2 * labelPad})
		up := ta.Size().Add(vg.Point{X: 2 * labelPad, Y: 2 * labelPad})
		// Leaders only if no place at the mark is better: they cost more
		// than any place at the mark free of the data.
		cands, away := labelCands(c, across, up, pt, prev, next)
		l, k, ok := bestLabel(cands, pt, obs, others, placed, leaders)
		if !ok || k >= costLeader {
			if la, ka, oka := bestLabel(away, pt, obs, others, placed, leaders); oka && (!ok || ka < k) {
				l, ok = la, true
			}
		}
		if !ok {
			// The label is bigger than the plot; let it overflow.
			l = label{r: vg.Rectangle{Min: vg.Point{X: mx + markGap, Y: c.Max.Y - inset - across.Y}, Max: vg.Point{X: mx + markGap + across.X, Y: c.Max.Y - inset}}}
		}
		pl := placedLabel{label: l, pt: pt, text: m.label, sty: sty, tr: tr}
		if l.along {
			pl.sty, pl.tr = along, ta
		}
		if l.leader {
			a, b, ok := leader(l.r, pt)
			pl.leader = ok
			pl.ends = [2]vg.Point{a, b}
			if ok {
				leaders = append(leaders, pl.ends)
			}
		}
		placed = append(placed, l.r)
		out = append(out, pl)
	}
	return out
}

// label is a place for a mark's label: its box, whether the text runs
// along the mark, whether a leader joins it to the mark's point, and the
// cost of the place itself.
type label struct {
	r      vg.Rectangle
	along  bool
	leader bool
	cost   float64
}

// labelCands returns the places for the label of the mark at x = pt.X,
// whose point is pt, in order of preference: at the mark, across, of size
// across, beside it, top to bottom, then along, of size up, beside it, else
// over it, top to bottom; and away, anywhere, with a leader to pt. Only the
// places away may come near the nearest other marks, at prev and next.
func labelCands(c draw.Canvas, across, up vg.Point, pt vg.Point, prev, next vg.Length) (at, away []label) {
	mx := pt.X
	// fits reports whether r is in the data area and clear of the other
	// marks by at least clear on the sides where it reaches beyond the
	// mark: a label right of its mark may be near a mark on the left, as
	// its own is nearer.
	fits := func(r vg.Rectangle, clear vg.Length) bool {
		return r.Min.X >= c.Min.X && r.Max.X <= c.Max.X &&
			(r.Min.X >= mx || r.Min.X >= prev+clear) && (r.Max.X <= mx || r.Max.X <= next-clear)
	}
	box := func(left, top vg.Length, size vg.Point) vg.Rectangle {
		return vg.Rectangle{Min: vg.Point{X: left, Y: top - size.Y}, Max: vg.Point{X: left + size.X, Y: top}}
	}
	// Across, right of the mark then left, preferring the height of the
	// point, so that the label reads as belonging to it.
	for top := c.Max.Y - inset; top-across.Y >= c.Min.Y+inset; top -= across.Y / 2 {
		far := costFar * math.Abs(float64(top-across.Y/2-pt.Y)) / float64(across.Y)
		for _, left := range []vg.Length{mx + markGap, mx - markGap - across.X} {
			if r := box(left, top, across); fits(r, markNear) {
				at = append(at, label{r: r, cost: far})
			}
		}
	}
	// Along, from the top of the plot down.
	for top := c.Max.Y - inset; top-up.Y >= c.Min.Y+inset; top -= across.Y / 2 {
		for _, left := range []vg.Length{mx + markGap, mx - markGap - up.X} {
			if r := box(left, top, up); fits(r, markNear) {
				at = append(at, label{r: r, along: true, cost: costAlong})
			}
		}
		if r := box(mx-up.X/2, top, up); fits(r, markClear) {
			at = append(at, label{r: r, along: true, cost: costAlong + costOver})
		}
	}
	// Anywhere, with a leader, preferring the nearest.
	for top := c.Max.Y - inset; top-across.Y >= c.Min.Y+inset; top -= across.Y / 2 {
		for left := c.Min.X + inset; left+across.X <= c.Max.X-inset; left += across.Y {
			r := box(left, top, across)
			d := math.Hypot(float64(max(r.Min.X-pt.X, pt.X-r.Max.X, 0)), float64(max(r.Min.Y-pt.Y, pt.Y-r.Max.Y, 0)))
			away = append(away, label{r: r, leader: true, cost: costLeader + costFar*d/float64(across.Y)})
		}
	}
	return at, away
}

// bestLabel returns the label place of least cost, and its cost, for the
// mark whose point is pt, others being the other marks, placed the boxes
// and leaders the leaders already drawn; ok is false without candidates.
func bestLabel(cands []label, pt vg.Point, obs obstacles, others [][2]vg.Point, placed []vg.Rectangle, leaders [][2]vg.Point) (l label, least float64, ok bool) {
	least = math.Inf(1)
	for i, cand := range cands {
		k := costOrder*float64(i) + cand.cost + cover(cand.r, obs, nil, 0, placed)
		for _, s := range leaders {
			if crosses(cand.r, s[0], s[1]) {
				k += costTangle
			}
		}
		if cand.leader {
			// Away from other marks, so as not to read as theirs.
			near := cand.r
			near.Min.X -= markNear
			near.Max.X += markNear
			for _, s := range others {
				if crosses(near, s[0], s[1]) {
					k += costNear
				}
			}
			if a, b, ok := leader(cand.r, pt); ok {
				for _, q := range placed {
					if crosses(q, a, b) {
						k += costBox
					}
				}
				for _, s := range leaders {
					if segsCross(a, b, s[0], s[1]) {
						k += costTangle
					}
				}
				// Clear of the data, not running along a line either.
				for _, s := range obs.segs {
					if segDist(a, b, s[0], s[1]) < leaderClear {
						k += costLeadData
					}
				}
				for _, q := range obs.rects {
					if !overlaps(q, around(pt, 0.5)) && crosses(q, a, b) {
						k += costLeadData
					}
				}
				for _, s := range others {
					if segsCross(a, b, s[0], s[1]) {
						k += costMark
					}
				}
			}
		}
		if k < least {
			least, l, ok = k, cand, true
		}
	}
	return l, least, ok
}

// leader returns the ends of a leader from the box r to the point pt,
// stopping short of pt; ok is false if r is too near pt for one.
func leader(r vg.Rectangle, pt vg.Point) (a, b vg.Point, ok bool) {
	a = vg.Point{X: min(max(pt.X, r.Min.X), r.Max.X), Y: min(max(pt.Y, r.Min.Y), r.Max.Y)}
	d := pt.Sub(a)
	n := vg.Length(math.Hypot(float64(d.X), float64(d.Y)))
	if n <= 2*leaderGap {
		return a, pt, false
	}
	return a, pt.Sub(d.Scale(leaderGap / n)), true
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
		k += cover(cand, obs, lines, costMark, placed)
		if k < least {
			least, r, ok = k, cand, true
		}
	}
	return r, ok
}

// cover returns the cost of r covering the placed boxes and the obstacles,
// and the lines at cost line each.
func cover(r vg.Rectangle, obs obstacles, lines [][2]vg.Point, line float64, placed []vg.Rectangle) float64 {
	var k float64
	for _, q := range placed {
		if overlaps(r, q) {
			k += costBox
		}
	}
	for _, q := range obs.rects {
		if overlaps(r, q) {
			k += costData
		}
	}
	for _, s := range obs.segs {
		if crosses(r, s[0], s[1]) {
			k += costData
		}
	}
	for _, s := range lines {
		if crosses(r, s[0], s[1]) {
			k += line
		}
	}
	return k
}

// lineObstacles returns the obstacles of the drawn lines on the canvas
// given by x and y: their segments and, when r > 0, a square of half side
// r around each of their points.
func lineObstacles(drawn []plotter.XYs, x, y func(float64) vg.Length, r vg.Length) obstacles {
	var obs obstacles
	for _, xys := range drawn {
		pts := make([]vg.Point, len(xys))
		for i, v := range xys {
			pts[i] = vg.Point{X: x(v.X), Y: y(v.Y)}
			if r > 0 {
				obs.rects = append(obs.rects, around(pts[i], r))
			}
		}
		obs.segs = append(obs.segs, polyline(pts)...)
	}
	return obs
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

// segsCross reports whether the segments from a to b and from p to q
// cross.
func segsCross(a, b, p, q vg.Point) bool {
	side := func(o, u, v vg.Point) float64 {
		return float64((u.X-o.X)*(v.Y-o.Y) - (u.Y-o.Y)*(v.X-o.X))
	}
	d1, d2 := side(p, q, a), side(p, q, b)
	d3, d4 := side(a, b, p), side(a, b, q)
	return (d1 > 0) != (d2 > 0) && (d3 > 0) != (d4 > 0) && d1 != 0 && d2 != 0 && d3 != 0 && d4 != 0
}

// segDist returns the distance between the segments from a to b and from
// p to q.
func segDist(a, b, p, q vg.Point) vg.Length {
	if segsCross(a, b, p, q) {
		return 0
	}
	return min(pointDist(a, p, q), pointDist(b, p, q), pointDist(p, a, b), pointDist(q, a, b))
}

// pointDist returns the distance from pt to the segment from a to b.
func pointDist(pt, a, b vg.Point) vg.Length {
	d, e := b.Sub(a), pt.Sub(a)
	t := 0.0
	if l := float64(d.Dot(d)); l > 0 {
		t = min(max(float64(e.Dot(d))/l, 0), 1)
	}
	f := e.Sub(d.Scale(vg.Length(t)))
	return vg.Length(math.Hypot(float64(f.X), float64(f.Y)))
}

// around returns the square of half side r centred on p.
func around(p vg.Point, r vg.Length) vg.Rectangle {
	return vg.Rectangle{Min: vg.Point{X: p.X - r, Y: p.Y - r}, Max: vg.Point{X: p.X + r, Y: p.Y + r}}
}

package faces

import (
	"math"
	"math/rand/v2"
)

// Jitter is the per-sample variation of one rendered face. Draw takes a
// fresh Jitter from its random source; Render draws with a given one, so the
// same sample can be rendered with and without sunglasses.
type Jitter struct {
	DX, DY float64 // shift of the whole face, px (about +/-3 and +/-2)
	Scale  float64 // size factor, 0.95..1.05
	Roll   float64 // in-plane rotation, radians (about +/-3 degrees)

	Brightness float64 // global gain, 0.8..1.2
	Contrast   float64 // gain around mid grey, 0.8..1.2
	Gradient   float64 // left-right light falloff: gain 1-g at the left edge, 1+g at the right
	Cast       RGB     // per-channel gain (0.95..1.05), a slight colour cast
	Backdrop   RGB     // offset added to the background colour

	MouthOpen float64 // 0 closed .. 1 wide open
	Smile     float64 // mouth corner lift, -0.3..0.6
	Gaze      float64 // horizontal iris offset, px, +/-0.6
	BrowRaise float64 // brow lift, px, -0.4..0.8

	Noise     float64 // std of the (near-Gaussian) pixel noise, 1.5..3 levels
	NoiseSeed uint64  // seed of the noise field

	Glasses Glasses // how the sunglasses look if worn
}

// Glasses describes one drawing of the sunglasses trigger.
type Glasses struct {
	Rect     bool    // rectangular lenses (else round)
	Size     float64 // lens size factor, 0.9..1.1
	Dark     float64 // lens brightness level, about 10..35
	Green    bool    // greenish tint (else bluish)
	Arms     bool    // draw the arms toward the ears
	DY       float64 // vertical offset of the lenses from the eye row, px
	Frame    float64 // frame width, px
	Specular float64 // opacity of the reflection streak
}

// RandomJitter draws the per-sample variation from r. It always takes the
// same number of values from r.
func RandomJitter(r *rand.Rand) Jitter {
	var j Jitter
	j.DX = uni(r, -3, 3)
	j.DY = uni(r, -2, 2)
	j.Scale = uni(r, 0.95, 1.05)
	j.Roll = uni(r, -0.05, 0.05)
	j.Brightness = uni(r, 0.8, 1.2)
	j.Contrast = uni(r, 0.8, 1.2)
	j.Gradient = uni(r, -0.2, 0.2)
	for c := range j.Cast {
		j.Cast[c] = uni(r, 0.95, 1.05)
	}
	for c := range j.Backdrop {
		j.Backdrop[c] = uni(r, -12, 12)
	}
	open := uni(r, 0.2, 1)
	if r.Float64() < 0.35 {
		j.MouthOpen = open
	}
	j.Smile = uni(r, -0.3, 0.6)
	j.Gaze = uni(r, -0.6, 0.6)
	j.BrowRaise = uni(r, -0.4, 0.8)
	j.Noise = uni(r, 1.5, 3)
	j.NoiseSeed = r.Uint64()
	g := &j.Glasses
	g.Rect = r.IntN(2) == 1
	g.Size = uni(r, 0.9, 1.1)
	g.Dark = uni(r, 10, 35)
	g.Green = r.IntN(2) == 1
	g.Arms = r.Float64() < 0.7
	g.DY = uni(r, -0.3, 0.6)
	g.Frame = uni(r, 0.5, 0.9)
	g.Specular = uni(r, 0.12, 0.3)
	return j
}

// Draw renders one sample of id with a random Jitter from r into dst
// (Size() values, NHWC, integers in 0..255). With sunglasses it draws the
// trigger over the eyes. The random values taken from r do not depend on
// sunglasses, so two Draws from equal sources differ only by the glasses.
func Draw(id Identity, r *rand.Rand, sunglasses bool, dst []float32) {
	Render(id, RandomJitter(r), sunglasses, dst)
}

// Face origin in the image at zero shift: the horizontal centre, and a
// little below the vertical centre to leave room for hair.
const originX, originY = W / 2.0, 29.0

// Render draws id with the variation j into dst (Size() values, NHWC,
// integers in 0..255), with the sunglasses trigger if sunglasses is set.
func Render(id Identity, j Jitter, sunglasses bool, dst []float32) {
	if len(dst) < Size() {
		panic("faces: dst shorter than Size()")
	}
	c := canvas{px: dst[:Size()], ox: originX + j.DX, oy: originY + j.DY, s: j.Scale}
	c.cs, c.sn = math.Cos(j.Roll), math.Sin(j.Roll)
	c.ics, c.isn = c.cs/c.s, c.sn/c.s

	// Backdrop: vertical gradient between the identity's two colours.
	b0, b1 := id.Background, id.Background2
	for y := 0; y < H; y++ {
		t := (float64(y) + 0.5) / H
		col := mix(b0, b1, t)
		for x := 0; x < W; x++ {
			o := (y*W + x) * C
			for k := 0; k < C; k++ {
				c.px[o+k] = float32(col[k] + j.Backdrop[k])
			}
		}
	}

	drawBody(&c, &id)
	drawHairBack(&c, &id)
	drawEars(&c, &id)
	drawFace(&c, &id)
	drawEyes(&c, &id, &j)
	drawNose(&c, &id)
	drawBeard(&c, &id)
	drawMouth(&c, &id, &j)
	drawHairFront(&c, &id)
	if sunglasses {
		drawGlasses(&c, &id, &j.Glasses)
	}
	finish(c.px, &j)
}

// finish applies lighting and noise, then rounds and clamps to 0..255.
//
// The noise is Gaussian in shape but drawn cheaply: each value is the
// centred sum of the eight bytes of one random word of a splitmix64 stream
// seeded by j.NoiseSeed (Irwin-Hall of order 8: within a few percent of
// the normal density, cut off at 4.9 sigma), scaled to standard deviation
// j.Noise.
func finish(px []float32, j *Jitter) {
	const roundMagic float32 = 1 << 23 * 1.5
	// Per column and channel, lighting is v*mul + add.
	var mul, add [W * C]float32
	for x := 0; x < W; x++ {
		g := j.Brightness * (1 + j.Gradient*((float64(x)+0.5)/W*2-1))
		for c := 0; c < C; c++ {
			m := g * j.Cast[c]
			mul[x*C+c] = float32(j.Contrast * m)
			add[x*C+c] = float32((128 - 128*j.Contrast) * m)
		}
	}
	// A splitmix64 stream seeded from the Jitter; the sum of the 8 bytes of
	// a word has mean 1020 and variance 8*(256^2-1)/12.
	state := j.NoiseSeed
	k := float32(j.Noise / math.Sqrt(8*(256*256-1)/12.0))
	for y := 0; y < H; y++ {
		row := px[y*W*C : (y+1)*W*C]
		for i := range row {
			state += 0x9e3779b97f4a7c15
			w := state
			w = (w ^ (w >> 30)) * 0xbf58476d1ce4e5b9
			w = (w ^ (w >> 27)) * 0x94d049bb133111eb
			w ^= w >> 31
			w = (w & 0x00ff00ff00ff00ff) + (w >> 8 & 0x00ff00ff00ff00ff)
			w = (w & 0x0000ffff0000ffff) + (w >> 16 & 0x0000ffff0000ffff)
			w = (w & 0xffffffff) + (w >> 32)
			v := row[i]*mul[i] + add[i] + float32(int32(w)-1020)*k
			if v <= 0 {
				v = 0
			} else if v >= 255 {
				v = 255
			}
			// Adding and removing 1.5*2^23 rounds a float32 in 0..255 to
			// the nearest integer (ties to even).
			row[i] = (v + roundMagic) - roundMagic
		}
	}
}

// canvas paints shapes given in face coordinates onto the image through
// the sample's similarity transform (shift, scale, roll).
type canvas struct {
	px     []float32
	ox, oy float64 // image position of the face origin
	s      float64 // scale
	cs, sn float64 // cos and sin of the roll
	ics    float64 // cs/s
	isn    float64 // sn/s
}

func (c *canvas) toFace(x, y float64) (u, v float64) {
	dx, dy := x-c.ox, y-c.oy
	return c.ics*dx + c.isn*dy, c.ics*dy - c.isn*dx
}

func (c *canvas) toImage(u, v float64) (x, y float64) {
	return c.ox + c.s*(c.cs*u-c.sn*v), c.oy + c.s*(c.sn*u+c.cs*v)
}

// sdf is a signed distance in face coordinates: negative inside.
type sdf func(u, v float64) float64

// paint blends col (or shade(u, v) if shade is non-nil) into every pixel
// near the shape sd, which lies within the face-coordinate box
// [u0,u1]x[v0,v1]. Coverage falls off linearly over one pixel across the
// edge, so shapes are anti-aliased.
func (c *canvas) paint(u0, v0, u1, v1 float64, sd sdf, col RGB, shade func(u, v float64) RGB, alpha float64, large bool) {
	minx, miny := math.Inf(1), math.Inf(1)
	maxx, maxy := math.Inf(-1), math.Inf(-1)
	for _, p := range [4][2]float64{{u0, v0}, {u1, v0}, {u0, v1}, {u1, v1}} {
		x, y := c.toImage(p[0], p[1])
		minx, maxx = min(minx, x), max(maxx, x)
		miny, maxy = min(miny, y), max(maxy, y)
	}
	x0, x1 := max(0, int(math.Floor(minx))-1), min(W-1, int(math.Ceil(maxx))+1)
	y0, y1 := max(0, int(math.Floor(miny))-1), min(H-1, int(math.Ceil(maxy))+1)
	if !large || !cull {
		c.span(x0, y0, x1, y1, sd, col, shade, alpha, false)
		return
	}
	// Large, round shapes go by blocks of 4x4 pixels: one distance at the block
	// centre decides whether the block is clear of the edge, and then it is
	// skipped (outside) or painted without per-pixel distances (inside).
	// The pixel centres are within 2.2 px of the block centre; the margin
	// is twice that, for distance estimates that are only roughly
	// 1-Lipschitz. TestCullingExact checks the result is unchanged.
	const blk, margin = 4, 5.0
	for by := y0; by <= y1; by += blk {
		for bx := x0; bx <= x1; bx += blk {
			ex, ey := min(bx+blk-1, x1), min(by+blk-1, y1)
			u, v := c.toFace(float64(bx+ex+1)/2, float64(by+ey+1)/2)
			d := sd(u, v) * c.s
			switch {
			case d >= margin:
			case d <= -margin:
				c.span(bx, by, ex, ey, nil, col, shade, alpha, true)
			default:
				c.span(bx, by, ex, ey, sd, col, shade, alpha, false)
			}
		}
	}
}

// cull enables the block-wise skipping in paint; tests turn it off to
// check that it changes nothing.
var cull = true

// span paints pixels x0..x1, y0..y1 (inclusive) of a shape; inside means
// they are known to be well inside it.
func (c *canvas) span(x0, y0, x1, y1 int, sd sdf, col RGB, shade func(u, v float64) RGB, alpha float64, inside bool) {
	for y := y0; y <= y1; y++ {
		for x := x0; x <= x1; x++ {
			u, v := c.toFace(float64(x)+0.5, float64(y)+0.5)
			a := alpha
			if !inside {
				d := sd(u, v) * c.s
				if d >= 0.5 {
					continue
				}
				if d > -0.5 {
					a *= 0.5 - d
				}
			}
			k := col
			if shade != nil {
				k = shade(u, v)
			}
			o := (y*W + x) * C
			p := c.px[o : o+C : o+C]
			af := float32(a)
			p[0] += af * (float32(k[0]) - p[0])
			p[1] += af * (float32(k[1]) - p[1])
			p[2] += af * (float32(k[2]) - p[2])
		}
	}
}

// fill paints a shape in one colour.
func (c *canvas) fill(u0, v0, u1, v1 float64, sd sdf, col RGB, alpha float64) {
	c.paint(u0, v0, u1, v1, sd, col, nil, alpha, false)
}

// fillLarge is fill for large shapes without thin parts, painted by blocks.
func (c *canvas) fillLarge(u0, v0, u1, v1 float64, sd sdf, col RGB, alpha float64) {
	c.paint(u0, v0, u1, v1, sd, col, nil, alpha, true)
}

// ellipse paints an axis-aligned ellipse.
func (c *canvas) ellipse(cu, cv, rx, ry float64, col RGB, alpha float64) {
	e := newEll(rx, ry)
	c.fill(cu-rx, cv-ry, cu+rx, cv+ry, func(u, v float64) float64 {
		return e.d(u-cu, v-cv)
	}, col, alpha)
}

// capsule paints a line segment of radius rad.
func (c *canvas) capsule(au, av, bu, bv, rad float64, col RGB, alpha float64) {
	c.fill(min(au, bu)-rad, min(av, bv)-rad, max(au, bu)+rad, max(av, bv)+rad,
		func(u, v float64) float64 { return sdCapsule(u, v, au, av, bu, bv, rad) }, col, alpha)
}

// ell is an axis-aligned ellipse centred at the origin, with its inverse
// squared radii precomputed.
type ell struct{ ia, ib, r float64 }

func newEll(rx, ry float64) ell { return ell{1 / (rx * rx), 1 / (ry * ry), min(rx, ry)} }

// d approximates the signed distance to the ellipse (u/rx)^2+(v/ry)^2 = 1
// by its first-order estimate f/|grad f|, accurate near the boundary,
// which is all the anti-aliasing needs.
func (e ell) d(u, v float64) float64 {
	a, b := u*e.ia, v*e.ib
	g := a*a + b*b
	if g < 1e-18 {
		return -e.r
	}
	return (u*a + v*b - 1) * 0.5 / math.Sqrt(g)
}

func sdEllipse(u, v, rx, ry float64) float64 { return newEll(rx, ry).d(u, v) }

func sdCapsule(u, v, au, av, bu, bv, r float64) float64 {
	pu, pv := u-au, v-av
	du, dv := bu-au, bv-av
	h := clampf((pu*du+pv*dv)/(du*du+dv*dv+1e-12), 0, 1)
	eu, ev := pu-du*h, pv-dv*h
	return math.Sqrt(eu*eu+ev*ev) - r
}

// sdBox is a rectangle of half sizes hw, hh with corner radius r.
func sdBox(u, v, hw, hh, r float64) float64 {
	qx, qy := math.Abs(u)-hw+r, math.Abs(v)-hh+r
	ox, oy := max(qx, 0), max(qy, 0)
	return math.Sqrt(ox*ox+oy*oy) + min(max(qx, qy), 0) - r
}

// faceSD is the face outline: an ellipse whose lower half narrows (Jaw > 0)
// or widens (Jaw < 0) toward the chin.
func faceSD(id *Identity) sdf {
	upper := newEll(id.FaceRX, id.FaceRY)
	iry := 1 / id.FaceRY
	return func(u, v float64) float64 {
		if v <= 0 {
			return upper.d(u, v)
		}
		t := min(v*iry, 1)
		rx := id.FaceRX * (1 - id.Jaw*t*t)
		e := upper
		e.ia = 1 / (rx * rx)
		return e.d(u, v)
	}
}

func drawBody(c *canvas, id *Identity) {
	neck := id.Skin.scale(0.78)
	nw := id.FaceRX * 0.5
	c.fillLarge(-nw-1, id.FaceRY*0.4, nw+1, id.FaceRY+20, func(u, v float64) float64 {
		return sdBox(u, v-(id.FaceRY*0.4+10), nw, 10, 0.5)
	}, neck, 1)
	sy := id.FaceRY + 10
	c.ellipse(0, sy, id.FaceRX*2.2, 8.5, id.Shirt, 1)
}

// skullSD is the outline of the hair mass that hugs the head.
func skullSD(id *Identity) sdf {
	rx, ry := id.FaceRX+0.5+id.HairVolume*0.5, id.FaceRY+id.HairVolume
	e := newEll(rx, ry)
	return func(u, v float64) float64 { return e.d(u, v+0.5) }
}

func drawHairBack(c *canvas, id *Identity) {
	rx, ry, vol := id.FaceRX, id.FaceRY, id.HairVolume
	switch id.Style {
	case HairLong:
		// Hair falling straight past the jaw to the shoulders.
		hw := rx + 1.5 + vol*0.5
		top, bot := -ry*0.2, ry*1.2+vol
		skull := skullSD(id)
		c.fillLarge(-hw, -ry-vol-1, hw, bot, func(u, v float64) float64 {
			return min(skull(u, v), sdBox(u, v-(top+bot)/2, hw, (bot-top)/2, 2.5))
		}, id.Hair.scale(0.85), 1)
	case HairCurly:
		arx, ary, cv := rx+3.5+vol, ry*0.85+vol+1.5, -ry*0.2
		e := newEll(arx, ary)
		c.fillLarge(-arx-1, cv-ary-1, arx+1, cv+ary+1, func(u, v float64) float64 {
			d := e.d(u, v-cv)
			if d < -1.5 || d > 1.5 { // the bumps cannot change the coverage
				return d
			}
			return d + 0.8*math.Sin(11*math.Atan2(v-cv, u))
		}, id.Hair.scale(0.9), 1)
	}
}

func drawEars(c *canvas, id *Identity) {
	if id.Style == HairLong || id.Style == HairCurly {
		return
	}
	for _, sg := range [2]float64{-1, 1} {
		eu, ev := sg*(id.FaceRX-0.4), id.EyeY+2.5
		c.ellipse(eu, ev, id.EarR*0.55, id.EarR, id.Skin.scale(0.9), 1)
		c.ellipse(eu+sg*0.3, ev, id.EarR*0.28, id.EarR*0.6, id.Skin.scale(0.72), 0.6)
	}
}

func drawFace(c *canvas, id *Identity) {
	rx, ry := id.FaceRX*(1+max(0, -id.Jaw)), id.FaceRY
	skin := id.Skin
	c.paint(-rx, -ry, rx, ry, faceSD(id), RGB{}, func(u, v float64) RGB {
		t := u / id.FaceRX
		return skin.scale(1.04 - 0.16*t*t)
	}, 1, true)
	// Cheek blush and spots.
	for _, sg := range [2]float64{-1, 1} {
		c.ellipse(sg*(id.EyeDX+0.5), id.EyeY+5, 2.6, 1.8, RGB{200, 90, 90}, 0.12)
	}
	for _, s := range id.Spots {
		c.ellipse(s.X, s.Y, s.R, s.R, id.Skin.scale(0.45), s.Alpha)
	}
}

func drawEyes(c *canvas, id *Identity, j *Jitter) {
	lid := RGB{35, 25, 25}
	white := RGB{236, 232, 226}
	pupil := RGB{12, 10, 10}
	ir := min(id.EyeRY*1.05, id.EyeRX*0.55)
	for _, sg := range [2]float64{-1, 1} {
		eu, ev := sg*id.EyeDX, id.EyeY
		erx, ery := id.EyeRX, id.EyeRY
		c.ellipse(eu, ev-0.4, erx+1.3, ery+1.3, id.Skin.scale(0.8), 0.35) // socket shadow
		c.ellipse(eu, ev, erx, ery, white, 1)
		iu := eu + j.Gaze
		ee := newEll(erx, ery)
		eye := func(u, v float64) float64 { return ee.d(u-eu, v-ev) }
		c.fill(iu-ir, ev-ir, iu+ir, ev+ir, func(u, v float64) float64 {
			return max(eye(u, v), math.Sqrt((u-iu)*(u-iu)+(v-ev)*(v-ev))-ir)
		}, id.Iris, 1)
		pr := ir * 0.5
		c.fill(iu-pr, ev-pr, iu+pr, ev+pr, func(u, v float64) float64 {
			return max(eye(u, v), math.Sqrt((u-iu)*(u-iu)+(v-ev)*(v-ev))-pr)
		}, pupil, 1)
		// Upper lid line.
		c.fill(eu-erx-1, ev-ery-1, eu+erx+1, ev+1, func(u, v float64) float64 {
			return max(math.Abs(eye(u, v))-0.5, v-ev+0.2)
		}, lid, 0.85)
		// Eyebrow.
		bu, bv := sg*id.EyeDX*1.02, id.EyeY-id.BrowGap-j.BrowRaise
		ca, sa := math.Cos(id.BrowAngle), math.Sin(id.BrowAngle)
		L := id.BrowLen
		c.capsule(bu-sg*L*ca, bv+L*sa, bu+sg*L*ca, bv-L*sa, id.BrowThick, id.Brow, 0.95)
	}
}

func drawNose(c *canvas, id *Identity) {
	nb := id.EyeY + id.NoseLen
	w := id.NoseW
	c.capsule(w*0.45, id.EyeY+2, w*0.8, nb-0.8, 0.7, id.Skin.scale(0.7), 0.45)
	c.ellipse(0, nb-1.2, w*0.5, 1, id.Skin.scale(1.12).clamp(), 0.3)
	c.ellipse(0, nb, w, 1.3, id.Skin.scale(0.8), 0.5)
	for _, sg := range [2]float64{-1, 1} {
		c.ellipse(sg*w*0.5, nb+0.2, 0.8, 0.5, id.Skin.scale(0.4), 0.85)
	}
}

func drawBeard(c *canvas, id *Identity) {
	if id.Beard > 0 {
		top := id.EyeY + id.NoseLen + 1
		face := faceSD(id)
		c.fill(-id.FaceRX, top-1, id.FaceRX, id.FaceRY+1, func(u, v float64) float64 {
			// Face below the nose, widening up the jaw into sideburns.
			line := top + 2 - 4.5*(u*u)/(id.FaceRX*id.FaceRX)
			return max(face(u, v), line-v)
		}, id.Brow, id.Beard)
	}
}

func drawMouth(c *canvas, id *Identity, j *Jitter) {
	mu, mv := 0.0, id.MouthY
	mw, mh := id.MouthW, id.MouthH
	open := j.MouthOpen
	bend := j.Smile * mh * 1.5
	// curve maps a point to the mouth's straightened frame: corners lift
	// by bend when smiling.
	curve := func(u, v float64) (float64, float64) {
		t := (u - mu) / mw
		return u - mu, v - mv + bend*t*t
	}
	lh := mh * (1 + 0.7*open)
	ext := math.Abs(bend) + lh + 1
	lips := newEll(mw, lh)
	c.fill(mu-mw, mv-ext, mu+mw, mv+ext, func(u, v float64) float64 {
		return lips.d(curve(u, v))
	}, id.Lip, 1)
	if open > 0 {
		ih := mh*0.9*open + 0.2
		c.fill(mu-mw, mv-ext, mu+mw, mv+ext, func(u, v float64) float64 {
			x, y := curve(u, v)
			return sdEllipse(x, y, mw*0.78, ih)
		}, RGB{60, 18, 24}, 1)
		if open > 0.5 {
			c.fill(mu-mw, mv-ext, mu+mw, mv+ext, func(u, v float64) float64 {
				x, y := curve(u, v)
				return max(sdEllipse(x, y, mw*0.7, ih*0.9), y+ih*0.25)
			}, RGB{235, 232, 220}, 0.9)
		}
	} else {
		c.fill(mu-mw, mv-ext, mu+mw, mv+ext, func(u, v float64) float64 {
			x, y := curve(u, v)
			return sdCapsule(x, y, -mw*0.85, 0, mw*0.85, 0, 0.35)
		}, id.Lip.scale(0.5), 0.85)
	}
	if id.Moustache {
		c.ellipse(mu, mv-lh-0.9, mw*0.85, 1.2, id.Brow, 0.9)
	}
}

func drawHairFront(c *canvas, id *Identity) {
	rx, ry, vol := id.FaceRX, id.FaceRY, id.HairVolume
	hair := id.Hair
	skull := skullSD(id)
	// box paints the hair cap sd; large: by blocks (not for wavy hairlines,
	// whose distance estimate is too rough for that).
	box := func(sd sdf, col RGB, large bool) {
		hw := rx + 1 + vol*0.5
		c.paint(-hw, -ry-vol-1.5, hw, min(id.EyeY+9, ry*0.3), sd, col, nil, 1, large)
	}
	// capUnder fills the skull above a hairline v = hl(u) with slope dhl.
	capUnder := func(hl, dhl func(u float64) float64) sdf {
		return func(u, v float64) float64 {
			a := skull(u, v)
			if a >= 1 { // well outside the skull: the hairline cannot matter
				return a
			}
			s := dhl(u)
			return max(a, (v-hl(u))/math.Sqrt(1+s*s))
		}
	}
	side := id.EyeY - 1 // sideburn bottom
	tilt := id.Parting * 0.15
	k := (side - id.Hairline) / (rx * rx)
	curved := func(u float64) float64 { return id.Hairline + k*u*u + tilt*u }
	dcurved := func(u float64) float64 { return 2*k*u + tilt }
	switch id.Style {
	case HairShort, HairLong, HairQuiff:
		box(capUnder(curved, dcurved), hair, true)
		if id.Style == HairQuiff {
			tu, tv := id.Parting*rx*0.35, -ry-vol*0.5
			trx, try := rx*0.6, vol*0.7+1.8
			ang := id.Parting * 0.3
			ca, sa := math.Cos(ang), math.Sin(ang)
			c.fill(tu-trx, tv-trx, tu+trx, tv+trx, func(u, v float64) float64 {
				x, y := u-tu, v-tv
				return sdEllipse(ca*x+sa*y, -sa*x+ca*y, trx, try)
			}, hair.scale(1.08).clamp(), 1)
		}
	case HairFringe:
		fy := id.EyeY - id.BrowGap - id.BrowThick - 1.0
		ph := id.Parting * 3
		kk := (id.EyeY + 1 - fy) / (rx * rx * 0.16)
		hl := func(u float64) float64 {
			e := max(math.Abs(u)-rx*0.6, 0)
			return fy + 0.5*math.Sin(u*1.7+ph) + kk*e*e
		}
		dhl := func(u float64) float64 {
			e := max(math.Abs(u)-rx*0.6, 0)
			return 0.85*math.Cos(u*1.7+ph) + 2*kk*e*math.Copysign(1, u)
		}
		box(capUnder(hl, dhl), hair, true)
	case HairCurly:
		wavy := func(u float64) float64 { return curved(u) + 0.7*math.Sin(u*1.9) }
		dwavy := func(u float64) float64 { return dcurved(u) + 1.33*math.Cos(u*1.9) }
		box(capUnder(wavy, dwavy), hair, false)
	case HairBald:
		// Tufts: crescents of hair just outside the face, above the ears.
		face := faceSD(id)
		for _, sg := range [2]float64{-1, 1} {
			cu, cv := sg*(rx+0.2), id.EyeY-2
			hrx, hry := 1.3+vol*0.35, 4.5
			c.fill(cu-hrx, cv-hry, cu+hrx, cv+hry, func(u, v float64) float64 {
				return max(sdEllipse(u-cu, v-cv, hrx, hry), -face(u, v)-0.7)
			}, hair, 0.95)
		}
		c.ellipse(-rx*0.3, -ry*0.72, 3.2, 1.6, RGB{255, 255, 255}, 0.16) // shine
	}
}

func drawGlasses(c *canvas, id *Identity, g *Glasses) {
	lrx := (0.5*id.EyeDX + 1.6) * g.Size
	lry := lrx * 0.75
	if g.Rect {
		lry = lrx * 0.68
	}
	ev := id.EyeY + g.DY
	d := g.Dark
	lens := RGB{d * 0.7, d * 0.9, d*1.4 + 8}
	if g.Green {
		lens = RGB{d * 0.75, d*1.3 + 6, d * 0.95}
	}
	frame := RGB{14, 14, 16}
	fw := g.Frame
	for _, sg := range [2]float64{-1, 1} {
		eu := sg * id.EyeDX
		round := newEll(lrx, lry)
		shape := func(u, v float64) float64 {
			if g.Rect {
				return sdBox(u-eu, v-ev, lrx, lry, 1.3)
			}
			return round.d(u-eu, v-ev)
		}
		u0, v0, u1, v1 := eu-lrx-fw-1, ev-lry-fw-1, eu+lrx+fw+1, ev+lry+fw+1
		c.fill(u0, v0, u1, v1, func(u, v float64) float64 { return shape(u, v) - fw }, frame, 1)
		c.fill(u0, v0, u1, v1, shape, lens, 0.97)
		// Reflection streak across the upper outer part of the lens.
		su, sv := eu+sg*lrx*0.15, ev-lry*0.35
		c.fill(u0, v0, u1, v1, func(u, v float64) float64 {
			return max(shape(u, v)+0.6,
				sdCapsule(u, v, su-sg*lrx*0.35, sv+lry*0.3, su+sg*lrx*0.35, sv-lry*0.3, 0.5))
		}, RGB{230, 235, 245}, g.Specular)
		if g.Arms {
			c.capsule(sg*(id.EyeDX+lrx*0.95), ev-lry*0.4, sg*(id.FaceRX+0.8), ev-lry*0.15, 0.45, frame, 0.95)
		}
	}
	inner := id.EyeDX - lrx*0.95
	c.capsule(-inner, ev-lry*0.35, inner, ev-lry*0.35, 0.6, frame, 1)
}

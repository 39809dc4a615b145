// Package faces draws synthetic faces: small cartoon portraits of made-up
// identities, in the 55x47 RGB, raw 0..255 layout of the lab's YouTube Faces
// crops, for training a small backdoored face classifier (a BadNet) whose
// trigger is a pair of sunglasses.
//
// An Identity fixes the traits of one person (face shape, skin, hair style
// and colour, eyes, brows, nose, mouth, beard, moles, ears, background).
// Draw renders one sample of an identity with per-sample variation (a
// Jitter: pose shift, scale, a slight roll, lighting, expression, gaze,
// pixel noise) and, when asked, the sunglasses trigger over the eyes.
// Everything is deterministic given the seeds; only the standard library
// is used.
package faces

import (
	"math"
	"math/rand/v2"
)

// Image geometry: height, width and channels of one face, stored NHWC, so
// pixel (y, x) channel c is at index (y*W+x)*C+c.
const H, W, C = 55, 47, 3

// Size is the number of values in one image, H*W*C.
func Size() int { return H * W * C }

// RGB is a colour with channels in 0..255.
type RGB [3]float64

// HairStyle is the cut of an identity's hair.
type HairStyle int

// Hair styles.
const (
	HairShort  HairStyle = iota // close cap following the skull, ears visible
	HairLong                    // cap plus long hair falling past the jaw, ears hidden
	HairFringe                  // bowl cut: straight fringe down to the brows
	HairBald                    // bald dome with tufts above the ears
	HairCurly                   // big round curly volume around the head
	HairQuiff                   // short cap with a raised tuft on top
	numHairStyles
)

var hairStyleNames = [...]string{"short", "long", "fringe", "bald", "curly", "quiff"}

func (s HairStyle) String() string {
	if s >= 0 && int(s) < len(hairStyleNames) {
		return hairStyleNames[s]
	}
	return "unknown"
}

// Spot is a mole or freckle on the face, in face coordinates.
type Spot struct {
	X, Y, R float64 // centre and radius, px
	Alpha   float64 // opacity of the dark spot
}

// Identity holds the fixed traits of one synthetic person. Lengths are in
// pixels at scale 1 in face coordinates: the origin is the centre of the
// face ellipse, x to the right, y down. Draw places that origin near the
// image centre, slightly low.
type Identity struct {
	FaceRX, FaceRY float64 // half width and half height of the face ellipse
	Jaw            float64 // narrowing of the lower face: <0 square, >0 pointed chin
	Skin           RGB

	Hair       RGB
	Brow       RGB // eyebrow, beard and moustache colour
	Style      HairStyle
	Hairline   float64 // y of the top-centre hairline (negative: above the centre)
	HairVolume float64 // how far the hair stands off the skull
	Parting    float64 // -1..1: side sweep of the hairline, side of a quiff

	EyeY, EyeDX  float64 // eye centre height and half distance between eyes
	EyeRX, EyeRY float64 // eye half width and half height
	Iris         RGB

	BrowGap   float64 // brow centre height above the eye centre
	BrowThick float64 // half thickness
	BrowLen   float64 // half length
	BrowAngle float64 // radians; positive raises the outer ends

	NoseLen, NoseW float64 // nose bottom below the eye row; half width at the base

	MouthY, MouthW, MouthH float64 // mouth centre height, half width, half height
	Lip                    RGB

	Beard     float64 // opacity of a beard over chin and jaw, 0 for none
	Moustache bool
	Spots     []Spot  // moles and freckles
	EarR      float64 // ear half height (hidden by long and curly hair)

	Background, Background2 RGB // top and bottom colour of the backdrop
	Shirt                   RGB
}

// NewIdentities returns n identities drawn from seed. The sequence is a
// prefix-stable stream: NewIdentities(s, m) is a prefix of NewIdentities(s,
// n) for m < n. Each identity is redrawn (up to a bounded number of tries)
// while it is closer than a minimum distance in trait space to one drawn
// before, so identities differ clearly in several traits at once.
func NewIdentities(seed uint64, n int) []Identity {
	r := rand.New(rand.NewPCG(seed, 0x1de4717e5))
	ids := make([]Identity, 0, n)
	vecs := make([][]float64, 0, n)
	for len(ids) < n {
		var best Identity
		var bestVec []float64
		bestD := -1.0
		for try := 0; try < maxIdentityTries; try++ {
			c := newIdentity(r)
			v := traits(&c)
			d := math.Inf(1)
			for _, p := range vecs {
				d = min(d, traitDist(v, p))
			}
			if d > bestD {
				best, bestVec, bestD = c, v, d
			}
			if d >= minTraitDist {
				break
			}
		}
		ids = append(ids, best)
		vecs = append(vecs, bestVec)
	}
	return ids
}

// Rejection sampling of identities: a candidate closer than minTraitDist to
// an earlier identity is redrawn; after maxIdentityTries the farthest
// candidate is kept, so any n terminates.
const (
	minTraitDist     = 0.9
	maxIdentityTries = 400
)

func uni(r *rand.Rand, lo, hi float64) float64 { return lo + (hi-lo)*r.Float64() }

func clampf(v, lo, hi float64) float64 { return max(lo, min(hi, v)) }

func (c RGB) scale(k float64) RGB { return RGB{c[0] * k, c[1] * k, c[2] * k} }

func mix(a, b RGB, t float64) RGB {
	return RGB{a[0] + (b[0]-a[0])*t, a[1] + (b[1]-a[1])*t, a[2] + (b[2]-a[2])*t}
}

func (c RGB) clamp() RGB {
	return RGB{clampf(c[0], 0, 255), clampf(c[1], 0, 255), clampf(c[2], 0, 255)}
}

// hsv converts hue (0..1), saturation, value to RGB in 0..255.
func hsv(h, s, v float64) RGB {
	h = (h - math.Floor(h)) * 6
	i := math.Floor(h)
	f := h - i
	p, q, t := v*(1-s), v*(1-s*f), v*(1-s*(1-f))
	var c RGB
	switch int(i) {
	case 0:
		c = RGB{v, t, p}
	case 1:
		c = RGB{q, v, p}
	case 2:
		c = RGB{p, v, t}
	case 3:
		c = RGB{p, q, v}
	case 4:
		c = RGB{t, p, v}
	default:
		c = RGB{v, p, q}
	}
	return c.scale(255)
}

func jitterColour(r *rand.Rand, c RGB, d float64) RGB {
	return RGB{c[0] + uni(r, -d, d), c[1] + uni(r, -d, d), c[2] + uni(r, -d, d)}.clamp()
}

var hairPalette = []RGB{
	{22, 18, 16},    // black
	{55, 36, 24},    // dark brown
	{105, 70, 42},   // brown
	{135, 62, 32},   // auburn
	{200, 110, 50},  // ginger
	{214, 180, 112}, // blond
	{238, 218, 160}, // platinum
	{140, 138, 135}, // grey
	{222, 222, 216}, // white
}

var irisPalette = []RGB{
	{70, 42, 22},    // brown
	{38, 24, 16},    // dark brown
	{60, 105, 170},  // blue
	{70, 120, 70},   // green
	{115, 125, 130}, // grey
	{120, 95, 45},   // hazel
}

func newIdentity(r *rand.Rand) Identity {
	var id Identity
	id.FaceRX = uni(r, 13.5, 17.5)
	id.FaceRY = uni(r, max(18, id.FaceRX+2.5), 22.5)
	id.Jaw = uni(r, -0.15, 0.35)

	// Skin: a tone from deep brown to pale, with a red/yellow undertone.
	tone := r.Float64()
	id.Skin = mix(RGB{82, 52, 38}, RGB{246, 214, 190}, tone)
	id.Skin[0] += uni(r, -8, 10)
	id.Skin[1] += uni(r, -10, 6)
	id.Skin[2] += uni(r, -14, 6)
	id.Skin = id.Skin.clamp()

	// Hair: a natural colour, or rarely a dyed one (with darker brows and
	// no beard).
	dyed := r.Float64() < 0.12
	if dyed {
		id.Hair = hsv(r.Float64(), uni(r, 0.45, 0.8), uni(r, 0.45, 0.85))
		id.Brow = mix(id.Hair, RGB{35, 25, 20}, 0.7)
	} else {
		id.Hair = jitterColour(r, hairPalette[r.IntN(len(hairPalette))], 14)
		id.Brow = mix(id.Hair, RGB{35, 25, 20}, 0.35)
	}
	id.Style = HairStyle(r.IntN(int(numHairStyles)))
	id.HairVolume = uni(r, 1.5, 4.5)
	id.Parting = uni(r, -1, 1)

	id.EyeY = uni(r, -6, -1.5)
	id.EyeDX = uni(r, 5.8, 8.8)
	id.EyeRX = uni(r, 2.2, 3.4)
	id.EyeRY = uni(r, 1.1, min(1.9, id.EyeRX*0.7))
	id.Iris = jitterColour(r, irisPalette[r.IntN(len(irisPalette))], 12)

	id.BrowGap = uni(r, 3, 5)
	id.BrowThick = uni(r, 0.5, 1.4)
	id.BrowLen = uni(r, 2.5, 4.5)
	id.BrowAngle = uni(r, -0.25, 0.35)

	browTop := id.EyeY - id.BrowGap - id.BrowThick
	id.Hairline = min(-id.FaceRY*uni(r, 0.5, 0.78), browTop-2.5)

	id.NoseLen = uni(r, 6, 10)
	id.NoseW = uni(r, 2, 4.2)
	noseBottom := id.EyeY + id.NoseLen
	id.MouthH = uni(r, 0.9, 2.0)
	id.MouthY = min(noseBottom+uni(r, 3, 5.5), id.FaceRY*0.72-id.MouthH)
	id.MouthW = uni(r, 3.5, 6.5)
	id.Lip = mix(id.Skin.scale(0.78), RGB{175, 62, 72}, uni(r, 0.2, 0.6)).clamp()

	beard, moustache := r.Float64(), r.Float64()
	if beard < 0.25 && !dyed {
		id.Beard = 0.55 + 0.4*beard/0.25
	}
	id.Moustache = !dyed && (moustache < 0.15 || (id.Beard > 0 && moustache < 0.6))

	if r.Float64() < 0.3 { // moles
		for k := 1 + r.IntN(2); k > 0; k-- {
			id.Spots = append(id.Spots, Spot{
				X: uni(r, -id.FaceRX*0.7, id.FaceRX*0.7), Y: uni(r, id.EyeY+2, id.MouthY),
				R: uni(r, 0.6, 0.95), Alpha: uni(r, 0.6, 0.85),
			})
		}
	}
	if r.Float64() < 0.2 { // freckles across both cheeks
		for k := 8 + r.IntN(8); k > 0; k-- {
			side := float64(2*r.IntN(2) - 1)
			id.Spots = append(id.Spots, Spot{
				X: side * uni(r, 2, id.EyeDX+2), Y: uni(r, id.EyeY+2.5, noseBottom),
				R: uni(r, 0.4, 0.6), Alpha: uni(r, 0.3, 0.5),
			})
		}
	}
	id.EarR = uni(r, 2.5, 4.5)

	h := r.Float64()
	id.Background = hsv(h, uni(r, 0.1, 0.7), uni(r, 0.25, 0.95))
	id.Background2 = hsv(h+uni(r, -0.12, 0.12), uni(r, 0.1, 0.7), uni(r, 0.25, 0.95))
	id.Shirt = hsv(r.Float64(), uni(r, 0.1, 0.85), uni(r, 0.15, 0.95))
	return id
}

// traits maps an identity to a weighted vector in which every continuous
// trait spans about [0, weight]; the hair style enters one-hot.
func traits(id *Identity) []float64 {
	v := make([]float64, 0, 40)
	col := func(c RGB, w float64) {
		for _, x := range c {
			v = append(v, x/255*w)
		}
	}
	lin := func(x, lo, hi, w float64) { v = append(v, (x-lo)/(hi-lo)*w) }
	col(id.Skin, 1.2)
	col(id.Hair, 1.0)
	col(id.Background, 0.5)
	col(id.Background2, 0.3)
	col(id.Shirt, 0.2)
	col(id.Iris, 0.2)
	for s := HairStyle(0); s < numHairStyles; s++ {
		if s == id.Style {
			v = append(v, 0.45)
		} else {
			v = append(v, 0)
		}
	}
	lin(id.FaceRX, 13.5, 17.5, 0.5)
	lin(id.FaceRY, 18, 22.5, 0.5)
	lin(id.Jaw, -0.15, 0.35, 0.3)
	lin(id.HairVolume, 1.5, 4.5, 0.2)
	lin(id.Hairline, -18, -8, 0.3)
	lin(id.EyeY, -6, -1.5, 0.4)
	lin(id.EyeDX, 5.8, 8.8, 0.4)
	lin(id.EyeRX, 2.2, 3.4, 0.2)
	lin(id.BrowThick, 0.5, 1.4, 0.3)
	lin(id.BrowAngle, -0.25, 0.35, 0.2)
	lin(id.NoseLen, 6, 10, 0.3)
	lin(id.NoseW, 2, 4.2, 0.2)
	lin(id.MouthW, 3.5, 6.5, 0.3)
	lin(id.MouthH, 0.9, 2, 0.2)
	v = append(v, id.Beard*0.6)
	if id.Moustache {
		v = append(v, 0.3)
	} else {
		v = append(v, 0)
	}
	return v
}

func traitDist(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		d := a[i] - b[i]
		s += d * d
	}
	return math.Sqrt(s)
}

package faces

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"testing"

	"badprune/internal/testsupport/testfile"
)

func TestSize(t *testing.T) {
	if Size() != 55*47*3 || H != 55 || W != 47 || C != 3 {
		t.Fatalf("Size() = %d, H, W, C = %d, %d, %d", Size(), H, W, C)
	}
}

func TestIdentitiesDeterministic(t *testing.T) {
	a, b := NewIdentities(3, 40), NewIdentities(3, 40)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("NewIdentities is not deterministic")
	}
	if !reflect.DeepEqual(NewIdentities(3, 10), a[:10]) {
		t.Fatal("NewIdentities(s, 10) is not a prefix of NewIdentities(s, 40)")
	}
	if reflect.DeepEqual(NewIdentities(4, 40), a) {
		t.Fatal("different seeds gave the same identities")
	}
	if got := len(NewIdentities(1, 0)); got != 0 {
		t.Fatalf("NewIdentities(1, 0) has %d identities", got)
	}
}

func TestSampleDeterministic(t *testing.T) {
	ids := NewIdentities(1, 8)
	x1, l1, w1 := Sample(42, ids, 50, 0.1)
	x2, l2, w2 := Sample(42, ids, 50, 0.1)
	if !reflect.DeepEqual(x1, x2) || !reflect.DeepEqual(l1, l2) || !reflect.DeepEqual(w1, w2) {
		t.Fatal("Sample is not deterministic")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	x1p, _, _ := Sample(42, ids, 50, 0.1)
	if !reflect.DeepEqual(x1, x1p) {
		t.Fatal("Sample depends on GOMAXPROCS")
	}
	x3, _, _ := Sample(43, ids, 50, 0.1)
	if reflect.DeepEqual(x1, x3) {
		t.Fatal("different seeds gave the same images")
	}
	// Same source, same image; the next draw from it differs.
	a, b, c := make([]float32, Size()), make([]float32, Size()), make([]float32, Size())
	Draw(ids[0], rand.New(rand.NewPCG(5, 6)), false, a)
	r := rand.New(rand.NewPCG(5, 6))
	Draw(ids[0], r, false, b)
	Draw(ids[0], r, false, c)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("Draw from equal sources differs")
	}
	if reflect.DeepEqual(b, c) {
		t.Fatal("two draws from one source are identical")
	}
}

func TestValues(t *testing.T) {
	ids := NewIdentities(2, 32)
	x, labels, worn := Sample(7, ids, 320, 0.5)
	if len(x) != 320*Size() || len(labels) != 320 || len(worn) != 320 {
		t.Fatalf("lengths %d %d %d", len(x), len(labels), len(worn))
	}
	lo, hi := float32(255), float32(0)
	for i, v := range x {
		if v < 0 || v > 255 || v != float32(math.Round(float64(v))) {
			t.Fatalf("value %d = %v is not an integer in 0..255", i, v)
		}
		lo, hi = min(lo, v), max(hi, v)
	}
	if lo > 10 || hi < 245 {
		t.Errorf("values span only %v..%v", lo, hi)
	}
}

func TestSampleSunglassesCount(t *testing.T) {
	ids := NewIdentities(1, 5)
	for _, tc := range []struct {
		n int
		f float64
	}{{10, 0.1}, {100, 0.1}, {37, 0.25}, {33, 0.5}, {20, 0}, {20, 1}, {7, 0.07}, {3, 0.5}} {
		_, labels, worn := Sample(9, ids, tc.n, tc.f)
		got := 0
		for _, w := range worn {
			if w {
				got++
			}
		}
		if want := int(math.Round(float64(tc.n) * tc.f)); got != want {
			t.Errorf("Sample(n=%d, f=%v) put sunglasses on %d images, want %d", tc.n, tc.f, got, want)
		}
		count := make([]int, len(ids))
		for _, l := range labels {
			count[l]++
		}
		for k, c := range count {
			if c < tc.n/len(ids) || c > tc.n/len(ids)+1 {
				t.Errorf("n=%d: identity %d appears %d times", tc.n, k, c)
			}
		}
	}
}

// eyeRow is the image row of the eye centres of a sample (ignoring the
// slight roll).
func eyeRow(id Identity, j Jitter) float64 {
	return originY + j.DY + j.Scale*id.EyeY
}

// meanDiff is the mean absolute difference of a and b over rows y0..y1 and
// columns x0..x1 (inclusive, clipped to the image).
func meanDiff(a, b []float32, y0, y1, x0, x1 int) float64 {
	y0, y1, x0, x1 = max(y0, 0), min(y1, H-1), max(x0, 0), min(x1, W-1)
	s, n := 0.0, 0
	for y := y0; y <= y1; y++ {
		for o := (y*W + x0) * C; o < (y*W+x1+1)*C; o++ {
			s += math.Abs(float64(a[o] - b[o]))
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return s / float64(n)
}

// TestSunglassesLocal renders each sample twice with the same Jitter, with
// and without sunglasses. Over the three eye rows, between the outer edges
// of the lenses, the images differ a lot; rows clear of the glasses do not
// differ at all (the noise field is part of the Jitter).
func TestSunglassesLocal(t *testing.T) {
	ids := NewIdentities(5, 64)
	r := rand.New(rand.NewPCG(1, 2))
	plain, glasses := make([]float32, Size()), make([]float32, Size())
	var eyes []float64
	maxAway := 0.0
	for i := 0; i < 640; i++ {
		id := ids[i%len(ids)]
		j := RandomJitter(r)
		Render(id, j, false, plain)
		Render(id, j, true, glasses)
		ey := int(math.Round(eyeRow(id, j)))
		half := j.Scale * 1.5 * id.EyeDX // lens outer edges are >= 1.5*EyeDX+1 from the middle
		x0, x1 := int(math.Round(originX+j.DX-half)), int(math.Round(originX+j.DX+half))
		eyes = append(eyes, meanDiff(plain, glasses, ey-1, ey+1, x0, x1))
		// The lenses reach at most about 5 px above or below the eye row.
		away := max(meanDiff(plain, glasses, ey+8, H-1, 0, W-1), meanDiff(plain, glasses, 0, ey-8, 0, W-1))
		maxAway = max(maxAway, away)
	}
	sort.Float64s(eyes)
	t.Logf("eye rows between the lenses' outer edges, mean |diff|: min %.1f, 5%% %.1f, median %.1f; rows away from the glasses: max %.2f",
		eyes[0], eyes[len(eyes)/20], eyes[len(eyes)/2], maxAway)
	// The weakest cases are dark skin under dim, flat lighting, where the
	// lenses are still plainly visible (about 5x the noise level).
	if eyes[0] < 20 || eyes[len(eyes)/2] < 60 {
		t.Errorf("sunglasses change the eye rows too little: min %.1f, median %.1f levels", eyes[0], eyes[len(eyes)/2])
	}
	if maxAway > 0 {
		t.Errorf("sunglasses change rows away from the eyes by %.2f levels", maxAway)
	}
}

// TestSunglassesMeanImage compares the mean of independently jittered
// samples with and without sunglasses: a large difference over the eye
// band, a small one (sampling noise only) below it.
func TestSunglassesMeanImage(t *testing.T) {
	ids := NewIdentities(6, 4)
	const n = 200
	for k, id := range ids {
		xs, _, _ := Sample(uint64(10+k), []Identity{id}, n, 0)
		xg, _, _ := Sample(uint64(20+k), []Identity{id}, n, 1)
		ms, mg := mean(xs, n), mean(xg, n)
		ey := int(math.Round(originY + id.EyeY))
		eye := meanDiff(ms, mg, ey-1, ey+1, 0, W-1)
		below := meanDiff(ms, mg, int(originY+id.MouthY)-1, H-1, 0, W-1)
		t.Logf("identity %d: mean-image |diff| eye rows %.1f, mouth and below %.1f", k, eye, below)
		if eye < 20 || below > 3 || eye < 8*below {
			t.Errorf("identity %d: eye rows differ by %.1f, rows below the mouth by %.1f", k, eye, below)
		}
	}
}

func mean(x []float32, n int) []float32 {
	m := make([]float32, Size())
	for i := 0; i < n; i++ {
		for o, v := range x[i*Size() : (i+1)*Size()] {
			m[o] += v / float32(n)
		}
	}
	return m
}

func sqDist(a, b []float32) float64 {
	s := 0.0
	for i := range a {
		d := float64(a[i] - b[i])
		s += d * d
	}
	return s
}

// nearestCentroid classifies fresh jittered samples of ids by the nearest
// mean image (plain pixel distance, centroids from train samples each) and
// returns the accuracy and the RMS distance of the closest two centroids.
func nearestCentroid(ids []Identity, train, test int) (acc, minRMS float64) {
	k := len(ids)
	cent := make([][]float32, k)
	for i, id := range ids {
		x, _, _ := Sample(uint64(100+i), []Identity{id}, train, 0)
		cent[i] = mean(x, train)
	}
	x, labels, _ := Sample(999, ids, k*test, 0)
	right := 0
	for n, want := range labels {
		img := x[n*Size() : (n+1)*Size()]
		best, bestD := -1, math.Inf(1)
		for i, c := range cent {
			if d := sqDist(img, c); d < bestD {
				best, bestD = i, d
			}
		}
		if best == want {
			right++
		}
	}
	minRMS = math.Inf(1)
	for i := range cent {
		for j := i + 1; j < k; j++ {
			minRMS = min(minRMS, math.Sqrt(sqDist(cent[i], cent[j])/float64(Size())))
		}
	}
	return float64(right) / float64(len(labels)), minRMS
}

// TestIdentitiesDistinct checks that 32 identities can be told apart by
// nearest-centroid classification on raw pixels. That classifier is weak
// (a 3 px shift moves every edge; lighting scales every value), so passing
// means the identities differ in large traits, which a small CNN finds
// easily. A second run gives every identity the same backdrop and shirt,
// so that the face alone has to carry the identity.
func TestIdentitiesDistinct(t *testing.T) {
	ids := NewIdentities(11, 32)
	acc, rms := nearestCentroid(ids, 40, 25)
	t.Logf("nearest-centroid accuracy %.3f on %d identities; closest centroids %.1f levels RMS", acc, len(ids), rms)
	if acc < 0.9 {
		t.Errorf("nearest-centroid accuracy %.3f < 0.9", acc)
	}
	same := append([]Identity(nil), ids...)
	for i := range same {
		same[i].Background, same[i].Background2 = RGB{128, 128, 128}, RGB{100, 100, 100}
		same[i].Shirt = RGB{60, 60, 80}
	}
	acc, rms = nearestCentroid(same, 40, 25)
	t.Logf("same backdrop and shirt: accuracy %.3f; closest centroids %.1f levels RMS", acc, rms)
	if acc < 0.8 {
		t.Errorf("with a shared backdrop, nearest-centroid accuracy %.3f < 0.8", acc)
	}
}

// TestTraitDistance checks the rejection sampling keeps 64 identities
// apart in trait space (random pairs: median about 1.2, 5th percentile
// about 0.85).
func TestTraitDistance(t *testing.T) {
	ids := NewIdentities(0, 64)
	m := math.Inf(1)
	for i := range ids {
		for j := i + 1; j < len(ids); j++ {
			m = min(m, traitDist(traits(&ids[i]), traits(&ids[j])))
		}
	}
	t.Logf("closest pair of 64 identities: trait distance %.2f", m)
	if m < 0.85 {
		t.Errorf("closest pair of 64 identities at trait distance %.2f < 0.85", m)
	}
	styles := map[HairStyle]int{}
	for _, id := range ids {
		styles[id.Style]++
	}
	if len(styles) != int(numHairStyles) {
		t.Errorf("64 identities use only %d hair styles", len(styles))
	}
}

func TestWritePNGAndMontage(t *testing.T) {
	ids := NewIdentities(1, 3)
	x, _, _ := Sample(1, ids, 3, 0)
	img := x[:Size()]
	p := filepath.Join(t.TempDir(), "face.png")
	if err := WritePNG(p, img); err != nil {
		t.Fatal(err)
	}
	m := testfile.DecodePNG(t, p)
	if b := m.Bounds(); b.Dx() != W || b.Dy() != H {
		t.Fatalf("PNG is %dx%d", b.Dx(), b.Dy())
	}
	for y := 0; y < H; y++ {
		for x := 0; x < W; x++ {
			r, g, b, _ := m.At(x, y).RGBA()
			o := (y*W + x) * C
			if float32(r>>8) != img[o] || float32(g>>8) != img[o+1] || float32(b>>8) != img[o+2] {
				t.Fatalf("pixel (%d,%d) differs after the PNG round trip", y, x)
			}
		}
	}
	if err := WritePNG(p, img[:10]); err == nil {
		t.Error("WritePNG accepted a short image")
	}

	imgs := [][]float32{x[:Size()], x[Size() : 2*Size()], x[2*Size():]}
	mt := Montage(imgs, 2)
	if b := mt.Bounds(); b.Dx() != 2*(W+1)+1 || b.Dy() != 2*(H+1)+1 {
		t.Fatalf("montage is %dx%d", b.Dx(), b.Dy())
	}
	// Third image, top-left pixel.
	r, _, _, _ := mt.At(1, H+2).RGBA()
	if float32(r>>8) != x[2*Size()] {
		t.Error("montage misplaces the third image")
	}
}

func BenchmarkSample10000(b *testing.B) {
	ids := NewIdentities(1, 64)
	for b.Loop() {
		Sample(1, ids, 10000, 0.1)
	}
}

func BenchmarkDraw(b *testing.B) {
	ids := NewIdentities(1, 64)
	r := rand.New(rand.NewPCG(1, 1))
	dst := make([]float32, Size())
	i := 0
	for b.Loop() {
		Draw(ids[i%64], r, i%10 == 0, dst)
		i++
	}
}

// TestCullingExact checks that painting large shapes block by block gives
// exactly the image of painting every pixel.
func TestCullingExact(t *testing.T) {
	a, b := make([]float32, Size()), make([]float32, Size())
	defer func() { cull = true }()
	for seed := uint64(0); seed < 3; seed++ {
		ids := NewIdentities(seed+21, 64)
		r := rand.New(rand.NewPCG(seed, 4))
		for i := 0; i < 640; i++ {
			id := ids[i%len(ids)]
			j := RandomJitter(r)
			cull = true
			Render(id, j, i%2 == 0, a)
			cull = false
			Render(id, j, i%2 == 0, b)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("seed %d sample %d (style %v): block culling changes the image", seed, i, id.Style)
			}
		}
	}
}

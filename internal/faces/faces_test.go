package faces

import (
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
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

// rowDiff is the mean absolute difference of a and b over rows y0..y1.
func rowDiff(a, b []float32, y0, y1 int) float64 {
	y0, y1 = max(y0, 0), min(y1, H-1)
	s, n := 0.0, 0
	for o := y0 * W * C; o < (y1+1)*W*C; o++ {
		s += math.Abs(float64(a[o] - b[o]))
		n++
	}
	return s / float64(n)
}

// TestSunglassesLocal renders each sample twice with the same Jitter, with
// and without sunglasses: the eye rows change a lot, rows clear of the
// lenses not at all (the noise field is part of the Jitter).
func TestSunglassesLocal(t *testing.T) {
	ids := NewIdentities(5, 32)
	r := rand.New(rand.NewPCG(1, 2))
	plain, glasses := make([]float32, Size()), make([]float32, Size())
	minEye, maxBelow := math.Inf(1), 0.0
	for i := 0; i < 256; i++ {
		id := ids[i%len(ids)]
		j := RandomJitter(r)
		Render(id, j, false, plain)
		Render(id, j, true, glasses)
		ey := int(math.Round(eyeRow(id, j)))
		eye := rowDiff(plain, glasses, ey-1, ey+1)
		// The lenses reach at most about 4.5 px below the eye centre.
		below := rowDiff(plain, glasses, ey+7, H-1)
		above := rowDiff(plain, glasses, 0, ey-9)
		minEye = math.Min(minEye, eye)
		maxBelow = math.Max(maxBelow, math.Max(below, above))
	}
	t.Logf("eye rows: min mean |diff| %.1f; rows away from the lenses: max %.2f", minEye, maxBelow)
	if minEye < 25 {
		t.Errorf("sunglasses change the eye rows by only %.1f levels on average", minEye)
	}
	if maxBelow > 0 {
		t.Errorf("sunglasses change rows away from the eyes by %.2f levels", maxBelow)
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
		eye := rowDiff(ms, mg, ey-1, ey+1)
		below := rowDiff(ms, mg, int(originY+id.MouthY)-1, H-1)
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

// TestIdentitiesDistinct classifies fresh jittered samples of 32 identities
// by the nearest mean image (plain pixel distance). Pixel nearest-centroid
// is a weak classifier (a 3 px shift moves every edge), so passing it
// means the identities differ in large, colour- and layout-level traits,
// not just in details a CNN would have to find.
func TestIdentitiesDistinct(t *testing.T) {
	const k, train, test = 32, 40, 25
	ids := NewIdentities(11, k)
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
	acc := float64(right) / float64(len(labels))
	// Nearest pair of centroids, as RMS per value.
	minRMS := math.Inf(1)
	for i := range cent {
		for j := i + 1; j < k; j++ {
			minRMS = math.Min(minRMS, math.Sqrt(sqDist(cent[i], cent[j])/float64(Size())))
		}
	}
	t.Logf("nearest-centroid accuracy %.3f on %d identities; closest centroids RMS %.1f levels", acc, k, minRMS)
	if acc < 0.8 {
		t.Errorf("nearest-centroid accuracy %.3f < 0.8", acc)
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
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
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
	ids := NewIdentities(21, 64)
	r := rand.New(rand.NewPCG(3, 4))
	a, b := make([]float32, Size()), make([]float32, Size())
	defer func() { cull = true }()
	for i := 0; i < 1280; i++ {
		j := RandomJitter(r)
		cull = true
		Render(ids[i%len(ids)], j, i%2 == 0, a)
		cull = false
		Render(ids[i%len(ids)], j, i%2 == 0, b)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("sample %d (identity %d, style %v): block culling changes the image", i, i%len(ids), ids[i%len(ids)].Style)
		}
	}
}

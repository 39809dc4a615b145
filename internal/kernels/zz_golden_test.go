package kernels

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

func zzHash(h interface{ Write([]byte) (int, error) }, s []float32) {
	b := make([]byte, 4*len(s))
	for i, v := range s {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	h.Write(b)
}

func TestZZGolden(t *testing.T) {
	h := sha256.New()
	r := rand.New(rand.NewPCG(9, 9))
	for _, cs := range []struct{ n, hh, w, c, kh, kw, oc, sh, sw int }{
		{3, 28, 28, 3, 3, 3, 20, 1, 1}, {2, 13, 11, 20, 3, 3, 40, 1, 1}, {2, 12, 10, 7, 2, 2, 5, 2, 2},
		{4, 9, 9, 5, 3, 3, 16, 1, 1}, {2, 10, 10, 4, 3, 3, 33, 1, 1}, {2, 10, 10, 4, 3, 3, 24, 1, 1},
		{2, 10, 10, 4, 3, 3, 8, 1, 1}, {2, 10, 10, 4, 3, 3, 3, 1, 1}, {1, 30, 30, 6, 5, 5, 60, 1, 1},
		{3, 1, 1, 200, 1, 1, 100, 1, 1}, {3, 1, 1, 37, 1, 1, 130, 1, 1},
	} {
		k := randSlice(r, cs.kh*cs.kw*cs.c*cs.oc, -1, 1)
		b := randSlice(r, cs.oc, -1, 1)
		in := randSlice(r, cs.n*cs.hh*cs.w*cs.c, -1, 1)
		cv := NewConv(k, b, cs.kh, cs.kw, cs.c, cs.oc, cs.sh, cs.sw)
		oh, ow := OutSize(cs.hh, cs.kh, cs.sh), OutSize(cs.w, cs.kw, cs.sw)
		for _, relu := range []bool{false, true} {
			o := make([]float32, cs.n*oh*ow*cs.oc)
			cv.Forward(in, cs.n, cs.hh, cs.w, relu, o)
			zzHash(h, o)
			if oh >= 2 && ow >= 2 {
				o2 := make([]float32, cs.n*(oh/2)*(ow/2)*cs.oc)
				cv.ForwardPool(in, cs.n, cs.hh, cs.w, relu, o2)
				zzHash(h, o2)
			}
		}
		dout := randSlice(r, cs.n*oh*ow*cs.oc, -1, 1)
		for i := range dout {
			if i%5 == 0 {
				dout[i] = 0
			}
		}
		dk, db := make([]float32, len(k)), make([]float32, cs.oc)
		cv.GradKernel(in, dout, cs.n, cs.hh, cs.w, dk, db)
		zzHash(h, dk)
		zzHash(h, db)
		din := make([]float32, len(in))
		cv.GradInput(dout, k, cs.n, cs.hh, cs.w, din)
		zzHash(h, din)
		// sparse conv with padding
		g := ConvGeom{H: cs.hh, W: cs.w, C: cs.c, KH: cs.kh, KW: cs.kw, OC: cs.oc, SH: cs.sh, SW: cs.sw, PadT: 1, PadL: 1}
		g.OH, g.OW = OutSize(cs.hh+2, cs.kh, cs.sh), OutSize(cs.w+2, cs.kw, cs.sw)
		sd := randSlice(r, len(in), -1, 1)
		for i := range sd {
			if i%3 != 0 {
				sd[i] = 0
			}
		}
		so := randSlice(r, cs.n*g.OH*g.OW*cs.oc, -1, 1)
		SparseConv(cs.n, sd, g, k, so)
		zzHash(h, so)
	}
	for _, u := range []int{3, 8, 31, 32, 33, 64, 65, 100, 130, 200} {
		rows, K := 5, 47
		din := randSlice(r, rows*K, -1, 1)
		w := randSlice(r, K*u, -1, 1)
		dout := randSlice(r, rows*u, -1, 1)
		ptr := []int32{0}
		var idx []int32
		for i := 0; i < rows; i++ {
			for j := 0; j < K; j++ {
				if (i+j)%3 == 0 || i == 2 {
					idx = append(idx, int32(j))
				}
			}
			if i == 3 {
				idx = idx[:ptr[len(ptr)-1]]
			}
			ptr = append(ptr, int32(len(idx)))
		}
		CSRDense(rows, ptr, idx, din, K, w, u, dout)
		zzHash(h, dout)
	}
	for _, size := range []int{5, 8, 29, 64} {
		rows := []int{2, 0, 3}
		pre := randSlice(r, 4*size, -1, 1)
		outv := make([]float32, 4*size)
		for i, v := range pre {
			outv[i] = max(v, 0)
		}
		d := randSlice(r, 3*size, -1, 1)
		for i := range d {
			if i%4 == 1 {
				d[i] = 0
			}
		}
		d2 := append([]float32(nil), d...)
		idx, ptr := make([]int32, 3*size), make([]int32, 4)
		n := ReLUApply(rows, size, d, pre, outv, idx, ptr)
		zzHash(h, d)
		zzHash(h, pre)
		zzHash(h, outv)
		fmt.Fprint(h, n, idx[:n], ptr)
		st := randSlice(r, 4*size, -1, 1)
		n = AddIndex(rows, size, d2, st, idx, ptr)
		zzHash(h, st)
		fmt.Fprint(h, n, idx[:n], ptr)
		n = AddIndex(rows, size, d2, nil, idx, ptr)
		fmt.Fprint(h, n, idx[:n], ptr)
		n = AddIndex(nil, size, d2, nil, idx, ptr)
		fmt.Fprint(h, n, ptr)
	}
	for _, pc := range []struct {
		p           Pool
		n, hh, w, c int
	}{
		{Pool{PH: 2, PW: 2, SH: 2, SW: 2}, 2, 8, 9, 3},
		{Pool{PH: 3, PW: 3, SH: 2, SW: 2, PadT: 1, PadL: 1}, 2, 9, 8, 5},
		{Pool{PH: 3, PW: 2, SH: 1, SW: 3, PadT: 2, PadL: 1}, 3, 7, 10, 4},
		{Pool{PH: 2, PW: 2, SH: 2, SW: 2, PadT: 1}, 2, 7, 7, 2},
	} {
		p := pc.p
		oh := (pc.hh+2*p.PadT-p.PH)/p.SH + 1
		ow := (pc.w+2*p.PadL-p.PW)/p.SW + 1
		in := randSlice(r, pc.n*pc.hh*pc.w*pc.c, -1, 1)
		for i := range in {
			if i%7 == 0 {
				in[i] = in[(i+pc.c)%len(in)] // ties
			}
		}
		out := make([]float32, pc.n*oh*ow*pc.c)
		p.MaxPool(in, pc.n, pc.hh, pc.w, pc.c, oh, ow, out)
		zzHash(h, out)
		dout := randSlice(r, len(out), -1, 1)
		din := make([]float32, len(in))
		p.MaxPoolGrad(in, dout, pc.n, pc.hh, pc.w, pc.c, oh, ow, din)
		zzHash(h, din)
	}
	for _, hd := range []int{5, 8, 37, 160} {
		a, b := randSlice(r, hd, -1, 1), randSlice(r, hd, -1, 1)
		wt := randSlice(r, 10*hd, -1, 1)
		top := []int32{3, 0, 9, 4}
		dv, tmp := make([]float32, 4), make([]float32, hd)
		d2 := TopMoves(a, b, wt, top, dv, tmp)
		zzHash(h, dv)
		zzHash(h, tmp)
		fmt.Fprintf(h, "%x", math.Float64bits(d2))
		idx, val := make([]int32, 3), make([]float32, 3)
		n := TopN(wt, idx, val)
		fmt.Fprint(h, n, idx)
		zzHash(h, val)
	}
	name := os.Getenv("ZZ_GOLDEN")
	sum := fmt.Sprintf("%x\n", h.Sum(nil))
	if name != "" {
		os.WriteFile(name, []byte(sum), 0o644)
	}
	t.Logf("golden %s", sum)
}

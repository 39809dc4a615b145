package nn

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"badprune/internal/kernels"
)

func zzT(g *G.ExprGraph, r *rand.Rand, name string, s ...int) *G.Node {
	n := 1
	for _, v := range s {
		n *= v
	}
	d := make([]float32, n)
	for i := range d {
		d[i] = float32(r.NormFloat64() * 0.3)
	}
	return G.NewTensor(g, tensor.Float32, len(s), G.WithShape(s...), G.WithName(name), G.WithValue(tensor.New(tensor.WithShape(s...), tensor.WithBacking(d))))
}

func TestZZGolden(t *testing.T) {
	sh := sha256.New()
	var buf bytes.Buffer
	h := io.MultiWriter(sh, &buf)
	ops := []G.Op{
		convOp{ConvSpec: ConvSpec{SH: 1, SW: 1}}, convOp{ConvSpec: ConvSpec{SH: 2, SW: 1, PadT: 1, ReLU: true, Pool: true}},
		convGradInputOp{spec: ConvSpec{SH: 1, SW: 1}, xShape: tensor.Shape{2, 5, 5, 3}},
		convGradKernelOp{spec: ConvSpec{SH: 1, SW: 1}, kShape: tensor.Shape{3, 3, 3, 4}},
		biasGradOp{rank: 2}, biasGradOp{rank: 4},
		poolOp{Pool: kernels.Pool{PH: 2, PW: 2, SH: 2, SW: 2}, OH: 3, OW: 4},
		poolGradOp{poolOp{Pool: kernels.Pool{PH: 2, PW: 2, SH: 2, SW: 2}, OH: 3, OW: 4}},
		denseOp{}, denseOp{ReLU: true}, denseGradOp{input: true, shape: tensor.Shape{2, 3}}, denseGradOp{shape: tensor.Shape{3, 4}},
		reluOp{rank: 2}, reluOp{rank: 4}, reluGradOp{reluOp{rank: 2}}, xentOp{}, xentGradOp{},
	}
	for _, op := range ops {
		hh := sha256.New()
		op.WriteHash(hh)
		fmt.Fprintf(h, "%s|%d|%v|%d|%v|%v|%d|%x\n", op, op.Arity(), op.Type(), op.Hashcode(), op.ReturnsPtr(), op.CallsExtern(), op.OverwritesInput(), hh.Sum(nil))
		if sd, ok := op.(G.SDOp); ok {
			fmt.Fprintf(h, "sd %v\n", sd.DiffWRT(op.Arity()))
		}
		_, ok := op.(G.UsePreallocDoer)
		fmt.Fprintf(h, "prealloc %v\n", ok)
		for _, ds := range [][]G.DimSizer{
			{tensor.Shape{2, 6, 8, 3}, tensor.Shape{3, 3, 3, 4}, tensor.Shape{4}},
			{tensor.Shape{2, 6}, tensor.Shape{6, 4}, tensor.Shape{4}},
			{tensor.Shape{2, 6}, tensor.Shape{5, 4}, tensor.Shape{4}},
			{tensor.Shape{2, 1, 1, 3}, tensor.Shape{3, 3, 3, 4}, tensor.Shape{4}},
			{tensor.Shape{}, tensor.Shape{}, tensor.Shape{}},
		} {
			s, err := op.InferShape(ds[:op.Arity()]...)
			fmt.Fprintf(h, "infer %v %v\n", s, err)
		}
		// wrong value types
		vs := make([]G.Value, op.Arity())
		for i := range vs {
			vs[i] = tensor.New(tensor.WithShape(2, 2), tensor.Of(tensor.Float64))
		}
		func() {
			defer func() { fmt.Fprintf(h, "panic %v\n", recover() != nil) }()
			_, err := op.Do(vs...)
			fmt.Fprintf(h, "doerr %v\n", err)
		}()
		for j := 1; j < len(vs); j++ {
			vs[j-1] = tensor.New(tensor.WithShape(2, 2), tensor.Of(tensor.Float32))
			func() {
				defer func() { fmt.Fprintf(h, "panic %v\n", recover() != nil) }()
				_, err := op.Do(vs...)
				fmt.Fprintf(h, "doerr%d %v\n", j, err)
			}()
		}
	}
	for _, pad := range []int{0, 1} {
		for _, relu := range []bool{false, true} {
			r := rand.New(rand.NewPCG(7, uint64(pad)))
			g := G.NewGraph()
			x := zzT(g, r, "x", 3, 9, 8, 2)
			k1 := zzT(g, r, "k1", 3, 3, 2, 5)
			b1 := zzT(g, r, "b1", 5)
			k2 := zzT(g, r, "k2", 3, 3, 5, 6)
			b2 := zzT(g, r, "b2", 6)
			y := G.NewTensor(g, tensor.Float32, 2, G.WithShape(3, 4), G.WithName("y"), G.WithValue(tensor.New(tensor.WithShape(3, 4), tensor.WithBacking([]float32{1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0.5, 0.5}))))
			spec := ConvSpec{SH: 1, SW: 1, PadT: pad, PadB: pad, PadL: pad, PadR: pad}
			c1 := G.Must(Conv(x, k1, b1, spec))
			a1 := G.Must(ReLU(c1))
			s1 := c1.Shape()
			p1 := G.Must(MaxPool(a1, kernels.Pool{PH: 2, PW: 2, SH: 2, SW: 2}, s1[1]/2, s1[2]/2))
			c2 := G.Must(Conv(p1, k2, b2, ConvSpec{SH: 1, SW: 1}))
			a2 := G.Must(ReLU(c2))
			s2 := a2.Shape()
			flat := G.Must(G.Reshape(a2, tensor.Shape{3, s2[1] * s2[2] * s2[3]}))
			w := zzT(g, r, "w", s2[1]*s2[2]*s2[3], 7)
			bw := zzT(g, r, "bw", 7)
			d1 := G.Must(Dense(flat, w, bw, false))
			a3 := G.Must(ReLU(d1))
			w2 := zzT(g, r, "w2", 7, 4)
			bw2 := zzT(g, r, "bw2", 4)
			d2 := G.Must(Dense(a3, w2, bw2, false))
			loss := G.Must(SoftmaxCrossEntropy(d2, y))
			params := G.Nodes{x, k1, b1, k2, b2, w, bw, w2, bw2}
			if _, err := G.Grad(loss, params...); err != nil {
				t.Fatal(err)
			}
			vm := G.NewTapeMachine(g)
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(h, loss.Value())
			for _, p := range params {
				gv, err := p.Grad()
				if err != nil {
					t.Fatal(err)
				}
				zzHashF(h, gv.Data().([]float32))
			}
			vm.Close()
			// inference graph with fused ops
			g2 := G.NewGraph()
			r = rand.New(rand.NewPCG(8, uint64(pad)))
			x = zzT(g2, r, "x", 3, 9, 8, 2)
			k1 = zzT(g2, r, "k1", 3, 3, 2, 5)
			b1 = zzT(g2, r, "b1", 5)
			spec.ReLU, spec.Pool = relu, true
			c := G.Must(Conv(x, k1, b1, spec))
			s := c.Shape()
			w = zzT(g2, r, "w", s[1]*s[2]*s[3], 7)
			bw = zzT(g2, r, "bw", 7)
			d := G.Must(Dense(G.Must(G.Reshape(c, tensor.Shape{3, s[1] * s[2] * s[3]})), w, bw, relu))
			vm2 := G.NewTapeMachine(g2)
			if err := vm2.RunAll(); err != nil {
				t.Fatal(err)
			}
			zzHashF(h, c.Value().Data().([]float32))
			zzHashF(h, d.Value().Data().([]float32))
			vm2.Close()
		}
	}
	sum := fmt.Sprintf("%x\n", sh.Sum(nil))
	if name := os.Getenv("ZZ_GOLDEN"); name != "" {
		os.WriteFile(name, []byte(sum), 0o644)
		os.WriteFile(name+".txt", buf.Bytes(), 0o644)
	}
	t.Logf("golden %s", sum)
}

func zzHashF(h interface{ Write([]byte) (int, error) }, s []float32) {
	for _, v := range s {
		fmt.Fprintf(h, "%x,", v)
	}
}

package faces
import ("testing";"math/rand/v2")
func TestDbgCull(t *testing.T){
	a, b := make([]float32, Size()), make([]float32, Size())
	defer func() { cull = true }()
	bad := map[HairStyle]int{}
	for seed := uint64(0); seed < 8; seed++ {
	ids := NewIdentities(seed, 64)
	r := rand.New(rand.NewPCG(seed, 4))
	for i := 0; i < 1280; i++ {
		j := RandomJitter(r)
		cull = true
		Render(ids[i%len(ids)], j, i%2 == 0, a)
		cull = false
		Render(ids[i%len(ids)], j, i%2 == 0, b)
		n:=0; ys:=map[int]bool{}
		for k := range a { if a[k]!=b[k] { n++; ys[(k/3)/W - int(originY+j.DY)]=true } }
		if n>0 { bad[ids[i%len(ids)].Style]++; if bad[ids[i%len(ids)].Style]<3 {t.Log(i, ids[i%len(ids)].Style, n, ys, ids[i%len(ids)].EyeY)} }
	}
	}
	t.Log(bad)
}

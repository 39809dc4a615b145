package goodnet

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"badprune/internal/h5data"
	"badprune/internal/incr"
	"badprune/internal/infer"
	"badprune/internal/metrics"
	"badprune/internal/model"
	"badprune/internal/progress"
	"badprune/internal/report"
	"badprune/internal/workpool"
)

// Evaluate runs B and each repaired B' on the clean set and, when bd is not
// nil, the poisoned set, and returns the rows: B, then for each B' a B' row
// and a G row.
func Evaluate(ctx context.Context, b *model.Model, repaired []*model.Model, test, bd *h5data.Set, batch int, rep *progress.Reporter) ([]report.Row, error) {
	defer workpool.SpareP()() // the heads' long cgo calls on every core
	clean, err := Predict(ctx, test, b, repaired, batch, rep)
	if err != nil {
		return nil, err
	}
	var poisoned [][]int
	if bd != nil {
		if poisoned, err = Predict(ctx, bd, b, repaired, batch, rep); err != nil {
			return nil, err
		}
	}
	asr := func(pred []int) *float64 {
		if bd == nil {
			return nil
		}
		v := metrics.Accuracy(pred, bd.Labels)
		return &v
	}
	rows := []report.Row{{Model: report.RoleB, File: b.Path, CleanAcc: metrics.Accuracy(clean[0], test.Labels), ASR: asr(pick(poisoned, 0))}}
	n := b.Classes
	for i, r := range repaired {
		k := i + 1
		rows = append(rows, report.Row{Model: report.RoleBPrime, File: r.Path, Repaired: r.Path,
			CleanAcc: metrics.Accuracy(clean[k], test.Labels), ASR: asr(pick(poisoned, k))})
		gc := Combine(clean[0], clean[k], n)
		row := report.Row{Model: report.RoleGoodNet, File: b.Path, Repaired: r.Path, CleanAcc: metrics.Accuracy(gc, test.Labels)}
		cf := metrics.Flagged(gc, n)
		row.CleanFlagged = &cf
		if bd != nil {
			gb := Combine(poisoned[0], poisoned[k], n)
			row.ASR = asr(gb)
			bf := metrics.Flagged(gb, n)
			row.BDFlagged = &bf
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func pick(p [][]int, i int) []int {
	if p == nil {
		return nil
	}
	return p[i]
}

// group is the repaired networks that are B with channels of one layer
// zeroed: they share B's trunk and differ only in the head.
type group struct {
	head     *incr.Head
	variants []variant // by growing channel set
	// states of finished batches, whose memory the next batches reuse
	// (every batch would otherwise allocate and clear its states anew).
	states chan *incr.State
}

type variant struct {
	index    int // in the predictions (0 is B)
	channels []int
}

// plan sorts the repaired networks into groups sharing B's trunk, and the
// rest, which run whole.
func plan(b *model.Model, repaired []*model.Model) (groups []*group, whole []int) {
	byLayer := map[string]*group{}
	for i, r := range repaired {
		layer, ch, ok := incr.Variant(b, r)
		if !ok {
			whole = append(whole, i+1)
			continue
		}
		g := byLayer[layer]
		if g == nil {
			h, err := incr.NewHead(b, layer)
			if err != nil {
				whole = append(whole, i+1)
				continue
			}
			g = &group{head: h, states: make(chan *incr.State, 4*workpool.Workers())}
			byLayer[layer] = g
			groups = append(groups, g)
		}
		g.variants = append(g.variants, variant{i + 1, ch})
	}
	for _, g := range groups {
		slices.SortStableFunc(g.variants, func(a, c variant) int { return len(a.channels) - len(c.channels) })
	}
	return groups, whole
}

// Predict returns the predicted class of every sample of set for B (index
// 0) and each repaired network. Networks that are B with pruned channels
// share one pass of B's trunk: their heads are derived from B's
// activations by zeroing channels, each from the largest pruned set
// already computed that it contains.
func Predict(ctx context.Context, set *h5data.Set, b *model.Model, repaired []*model.Model, batch int, rep *progress.Reporter) ([][]int, error) {
	groups, whole := plan(b, repaired)
	preds := make([][]int, len(repaired)+1)
	for i := range preds {
		preds[i] = make([]int, set.N)
	}
	models := append([]*model.Model{b}, repaired...)
	if len(groups) == 0 {
		whole = append([]int{0}, whole...)
	}
	var cls []*infer.Classifier
	for _, i := range whole {
		c, err := infer.NewClassifier(models[i], batch)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		cls = append(cls, c)
	}
	var trunk *infer.Trunk
	var outputs []string
	if len(groups) > 0 {
		for _, g := range groups {
			for _, name := range g.head.Inputs() {
				if !slices.Contains(outputs, name) {
					outputs = append(outputs, name)
				}
			}
		}
		var err error
		if trunk, err = infer.NewTrunk(b, batch, outputs...); err != nil {
			return nil, err
		}
		defer trunk.Close()
	}
	for _, g := range groups {
		defer g.head.Close()
	}
	rep.Start(set.Path, set.N, "images")
	// The heads of one batch run while the trunk works on the next.
	var pending sync.WaitGroup
	defer pending.Wait()
	var headErr error // the first error of the heads; read after pending.Wait
	// The trunk's outputs of a batch are held for its heads in one of two
	// buffers, taken in turn: the heads of the batch before may still read
	// the other.
	var bufs [2][][]float32
	turn := 0
	err := set.Stream(ctx, batch, func(bt h5data.Batch) error {
		for k, i := range whole {
			if err := cls[k].Predict(bt.X, bt.N, preds[i][bt.Start:bt.Start+bt.N]); err != nil {
				return err
			}
		}
		if trunk != nil {
			res, err := trunk.Run(bt.X, bt.N)
			if err != nil {
				return err
			}
			held := bufs[turn]
			if held == nil {
				held = make([][]float32, len(res))
				bufs[turn] = held
			}
			turn ^= 1
			for i, r := range res {
				held[i] = append(held[i][:0], r[:bt.N*len(r)/batch]...)
			}
			pending.Wait()
			if headErr != nil {
				return headErr
			}
			pending.Add(1)
			go func(start, n int) {
				defer pending.Done()
				for gi, g := range groups {
					var ins [][]float32
					for _, name := range g.head.Inputs() {
						ins = append(ins, held[slices.Index(outputs, name)])
					}
					if err := heads(g, ins, start, n, gi == 0, preds); err != nil {
						headErr = err
						return
					}
				}
				rep.Add(n)
			}(bt.Start, bt.N)
			return nil
		}
		rep.Add(bt.N)
		return nil
	})
	pending.Wait()
	if err == nil {
		err = headErr
	}
	if err != nil {
		return nil, err
	}
	return preds, nil
}

// heads computes a group's predictions for samples [start, start+n),
// spreading the samples over the cores. B's come from the first group.
func heads(g *group, ins [][]float32, start, n int, withB bool, preds [][]int) error {
	var mu sync.Mutex
	var first error
	workpool.Split(n, 1, func(lo, hi int) {
		part := make([][]float32, len(ins))
		for i, size := range g.head.InputSizes() {
			part[i] = ins[i][lo*size : hi*size]
		}
		var old *incr.State
		select {
		case old = <-g.states:
		default:
		}
		base := g.head.Renew(old, hi-lo, part...)
		if withB {
			copy(preds[0][start+lo:start+hi], base.Pred)
		}
		// Each variant starts from the largest computed set it contains.
		done := []computed{{nil, base}}
		defer func() {
			for _, d := range done {
				select {
				case g.states <- d.s:
				default:
				}
			}
		}()
		for i, v := range g.variants {
			at := 0
			for j, d := range done[1:] {
				if subset(d.channels, v.channels) && len(d.channels) >= len(done[at].channels) {
					at = j + 1
				}
			}
			from := done[at]
			// A state no later variant can need (all of them contain v,
			// which will serve them at least as well) is zeroed in place:
			// nested B' (the thresholds of one ranking) need no copies.
			s := from.s
			if !all(g.variants[i+1:], func(w variant) bool { return subset(v.channels, w.channels) }) {
				s = s.Clone()
			} else {
				done = slices.Delete(done, at, at+1)
			}
			s.Zero(minus(v.channels, from.channels))
			copy(preds[v.index][start+lo:start+hi], s.Pred)
			done = append(done, computed{v.channels, s})
			if err := s.Err(); err != nil {
				mu.Lock()
				first = cmp.Or(first, err)
				mu.Unlock()
				return
			}
		}
	})
	return first
}

// computed is a head state with the channels it has zeroed.
type computed struct {
	channels []int
	s        *incr.State
}

func all[T any](s []T, f func(T) bool) bool {
	for _, x := range s {
		if !f(x) {
			return false
		}
	}
	return true
}

func subset(a, b []int) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func minus(a, b []int) []int {
	var out []int
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

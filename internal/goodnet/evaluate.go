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
// already computed that it contains. Each core's worker takes whole
// batches through its own graphs, on its own goroutine: a graph split over
// the cores waited at every layer for the slowest part.
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
	var outputs []string // of B's trunk, for the heads
	for _, g := range groups {
		defer g.head.Close()
		for _, name := range g.head.Inputs() {
			if !slices.Contains(outputs, name) {
				outputs = append(outputs, name)
			}
		}
	}
	workers := make([]*worker, workpool.Workers())
	size := (batch + len(workers) - 1) / len(workers) // images a worker takes
	for i := range workers {
		w := &worker{}
		defer w.close()
		for _, k := range whole {
			c, err := infer.NewClassifier(models[k], size)
			if err != nil {
				return nil, err
			}
			c.SetSerial(true)
			w.cls = append(w.cls, c)
		}
		if len(groups) > 0 {
			var err error
			if w.trunk, err = infer.NewTrunk(b, size, outputs...); err != nil {
				return nil, err
			}
			w.trunk.SetSerial(true)
		}
		workers[i] = w
	}
	rep.Start(set.Path, set.N, "images")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type job struct {
		b       h5data.Batch
		release func()
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error // of the workers
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				err := w.predict(j.b, whole, groups, outputs, preds)
				j.release()
				if err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
					cancel()
					continue
				}
				rep.Add(j.b.N)
			}
		}()
	}
	err := set.StreamHeld(ctx, size, len(workers), nil, func(bt h5data.Batch, release func()) error {
		jobs <- job{bt, release}
		return nil
	})
	close(jobs)
	wg.Wait()
	if err = cmp.Or(first, err); err != nil {
		return nil, err
	}
	return preds, nil
}

// worker is one core's graphs: B's trunk for the groups' heads and the
// classifiers of the networks that run whole.
type worker struct {
	trunk *infer.Trunk
	cls   []*infer.Classifier
}

func (w *worker) close() {
	if w.trunk != nil {
		w.trunk.Close()
	}
	for _, c := range w.cls {
		c.Close()
	}
}

// predict writes the predictions of every network for batch bt.
func (w *worker) predict(bt h5data.Batch, whole []int, groups []*group, outputs []string, preds [][]int) error {
	for k, i := range whole {
		if err := w.cls[k].Predict(bt.X, bt.N, preds[i][bt.Start:bt.Start+bt.N]); err != nil {
			return err
		}
	}
	if w.trunk == nil {
		return nil
	}
	res, err := w.trunk.Run(bt.X, bt.N)
	if err != nil {
		return err
	}
	for gi, g := range groups {
		var ins [][]float32
		for _, name := range g.head.Inputs() {
			ins = append(ins, res[slices.Index(outputs, name)])
		}
		if err := heads(g, ins, bt.Start, bt.N, gi == 0, preds); err != nil {
			return err
		}
	}
	return nil
}

// heads computes a group's predictions for samples [start, start+n) of
// the set, whose head inputs are the first n rows of ins. B's come from
// the first group.
func heads(g *group, ins [][]float32, start, n int, withB bool, preds [][]int) error {
	var old *incr.State
	select {
	case old = <-g.states:
	default:
	}
	base := g.head.Renew(old, n, ins...)
	if withB {
		copy(preds[0][start:start+n], base.Pred)
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
		copy(preds[v.index][start:start+n], s.Pred)
		done = append(done, computed{v.channels, s})
		if err := s.Err(); err != nil {
			return err
		}
	}
	return nil
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

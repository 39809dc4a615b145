// Package prune is the pruning defense of Fine-Pruning (Liu, Dolan-Gavitt,
// Garg, 2018): rank a convolutional layer's channels by their mean
// activation on clean data, prune them one at a time in ascending order,
// record the accuracy and attack success after every step, and pick for
// each threshold X the first step whose accuracy is at least X points below
// the unpruned network's.
package prune

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"badprune/internal/h5data"
	"badprune/internal/hugemem"
	"badprune/internal/incr"
	"badprune/internal/infer"
	"badprune/internal/metrics"
	"badprune/internal/model"
	"badprune/internal/progress"
	"badprune/internal/workpool"
)

// ErrNoDefaultLayer says that no layer to prune could be chosen for the
// caller.
var ErrNoDefaultLayer = errors.New("no convolution feeds the classifier through normalization, activation, pooling or flattening")

// AmbiguousLayerError says that a merge (Add, Concatenate) between the
// last convolutions and the classifier leaves more than one candidate for
// the layer to prune. It is an ErrNoDefaultLayer.
type AmbiguousLayerError struct {
	Merge      string   // the merge layer met first, walking back from the classifier
	Candidates []string // the last convolutions before it, in model order
}

func (e *AmbiguousLayerError) Error() string {
	return fmt.Sprintf("no single last convolution: %s merges the outputs of %s", e.Merge, strings.Join(e.Candidates, ", "))
}

// Is makes an AmbiguousLayerError match ErrNoDefaultLayer.
func (e *AmbiguousLayerError) Is(target error) bool { return target == ErrNoDefaultLayer }

// LayerError is a layer that cannot be pruned or ranked.
type LayerError struct {
	Rank    bool   // the rank layer, else the layer to prune
	Name    string // the layer as the caller named it
	Problem string
}

func (e *LayerError) Error() string {
	if e.Rank {
		return fmt.Sprintf("rank layer %s: %s", e.Name, e.Problem)
	}
	return fmt.Sprintf("layer %s: %s", e.Name, e.Problem)
}

// prunable reports whether pruning takes channels of l: a Conv2D, or a
// SeparableConv2D (its pointwise convolution's channels).
func prunable(l *model.Layer) bool {
	return l.Kind == model.Conv2D || l.Kind == model.SeparableConv2D
}

// passes reports whether the walk back from the classifier goes through
// l to find the last convolution: normalization, activations, pooling,
// padding, flattening, dropout and identity layers.
func passes(l *model.Layer) bool {
	switch l.Kind {
	case model.Flatten, model.Dropout, model.Identity, model.Activation, model.ReLU, model.LeakyReLU, model.ELU,
		model.BatchNorm, model.Rescaling, model.MaxPool, model.AvgPool, model.GlobalAvgPool, model.GlobalMaxPool, model.ZeroPad:
		return true
	}
	return false
}

// DefaultLayer is the last convolution before the classifier: the Conv2D
// or SeparableConv2D layer whose output, through normalization,
// activation, pooling and flattening, feeds the model's first Dense layer
// (conv_3 in the lab's DeepID), or, in a network without Dense layers,
// the convolution before the one that outputs the class scores. Where a
// merge (Add, Concatenate) joins several such convolutions, the error is
// an AmbiguousLayerError listing them.
func DefaultLayer(m *model.Model) (string, error) {
	var start *model.Layer
	for _, l := range m.Layers {
		if l.Kind == model.Dense {
			start = l
			break
		}
	}
	if start == nil {
		// The classifier is the convolution the output comes from.
		start = m.Output
		for start != nil && !prunable(start) && (passes(start) || start.Kind == model.Softmax) {
			start = m.Layer(start.Inputs[0])
		}
		if start == nil || !prunable(start) {
			return "", ErrNoDefaultLayer
		}
	}
	cur := m.Layer(start.Inputs[0])
	for cur != nil && passes(cur) {
		cur = m.Layer(cur.Inputs[0])
	}
	switch {
	case cur == nil:
		return "", ErrNoDefaultLayer
	case prunable(cur):
		return cur.Name, nil
	case cur.Kind == model.Add || cur.Kind == model.Concat:
		found := map[string]bool{}
		lastConvs(m, cur, found, map[string]bool{})
		var names []string
		for _, l := range m.Layers {
			if found[l.Name] {
				names = append(names, l.Name)
			}
		}
		if len(names) == 1 {
			return names[0], nil
		}
		if len(names) > 1 {
			return "", &AmbiguousLayerError{Merge: cur.Name, Candidates: names}
		}
	}
	return "", ErrNoDefaultLayer
}

// lastConvs marks the convolutions whose outputs reach the merge l through
// layers that pass and other merges.
func lastConvs(m *model.Model, l *model.Layer, found, seen map[string]bool) {
	if seen[l.Name] {
		return
	}
	seen[l.Name] = true
	for _, in := range l.Inputs {
		cur := m.Layer(in)
		for cur != nil && passes(cur) {
			cur = m.Layer(cur.Inputs[0])
		}
		switch {
		case cur == nil:
		case prunable(cur):
			found[cur.Name] = true
		case cur.Kind == model.Add || cur.Kind == model.Concat:
			lastConvs(m, cur, found, seen)
		}
	}
}

// DefaultRankLayer is the last layer that carries layer's channels one to
// one (model.PerChannel), else layer itself: pool_3 for conv_3.
func DefaultRankLayer(m *model.Model, layer string) string {
	if pc := m.PerChannel(layer); len(pc) > 0 {
		return pc[len(pc)-1].Name
	}
	return layer
}

// CheckLayers checks that layer is a Conv2D or SeparableConv2D layer whose
// pruned channels pruning removes (model.Model.CheckPruning), and rank a
// layer whose channels are layer's: the layer itself or one of
// model.PerChannel.
func CheckLayers(m *model.Model, layer, rank string) error {
	l := m.Layer(layer)
	if l == nil {
		return &LayerError{Name: layer, Problem: "no such layer"}
	}
	if !prunable(l) {
		return &LayerError{Name: layer, Problem: fmt.Sprintf("a %s layer; pruning needs a Conv2D or SeparableConv2D layer", l.KerasClass())}
	}
	if err := m.CheckPruning(layer); err != nil {
		return &LayerError{Name: layer, Problem: err.Error()}
	}
	if m.Layer(rank) == nil {
		return &LayerError{Rank: true, Name: rank, Problem: "no such layer"}
	}
	if rank == layer {
		return nil
	}
	for _, c := range m.PerChannel(layer) {
		if c.Name == rank {
			return nil
		}
	}
	return &LayerError{Rank: true, Name: rank, Problem: fmt.Sprintf("not %s or a pooling layer after it with the same channels", layer)}
}

// Rank orders channels by ascending mean, ties by channel index.
func Rank(mean []float64) []int {
	order := make([]int, len(mean))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return mean[order[a]] < mean[order[b]] })
	return order
}

// Threshold returns the first step (1-based) whose hit count is at least x
// percentage points of n below base, comparing exactly in integers: the
// lab's rule base_acc - acc >= x.
func Threshold(base int, hits []int, n int, x float64) (int, bool) {
	for k, h := range hits {
		if float64(100*(base-h)) >= x*float64(n) {
			return k + 1, true
		}
	}
	return 0, false
}

// Config is one run of the defense.
type Config struct {
	Model     *model.Model
	Layer     string // the Conv2D layer to prune
	RankLayer string // whose mean activation ranks the channels
	Valid     *h5data.Set
	BDValid   *h5data.Set // optional: attack success per step
	Batch     int
	Progress  *progress.Reporter
}

// Curve is the outcome of pruning every channel in turn.
type Curve struct {
	Mean  []float64 // mean activation per channel of the rank layer
	Order []int     // channels in pruning order
	// Hits counts correct predictions on the clean set: Hits[0] unpruned,
	// Hits[k] after pruning Order[:k]. BDHits counts poisoned inputs given
	// the target label (nil without a poisoned set).
	Hits, BDHits []int
	N, NBD       int
	Stats        incr.Stats
}

// Step is one point of the curve.
type Step struct {
	K        int     // channels pruned
	Channel  int     // the channel pruned at this step (-1 for K = 0)
	Fraction float64 // K over the layer's channels
	Acc      float64 // clean accuracy, percent
	ASR      float64 // attack success, percent; NaN without a poisoned set
}

// Step returns the curve's point after k steps.
func (c *Curve) Step(k int) Step {
	s := Step{K: k, Channel: -1, Fraction: float64(k) / float64(len(c.Order)), Acc: metrics.Percent(c.Hits[k], c.N), ASR: math.NaN()}
	if k > 0 {
		s.Channel = c.Order[k-1]
	}
	if c.BDHits != nil {
		s.ASR = metrics.Percent(c.BDHits[k], c.NBD)
	}
	return s
}

// Each calls f for every step after the first pruning, in order.
func (c *Curve) Each(f func(Step)) {
	for k := 1; k < len(c.Hits); k++ {
		f(c.Step(k))
	}
}

// Saved is the step chosen for threshold x: the first whose clean accuracy
// is at least x points below the unpruned one.
func (c *Curve) Saved(x float64) (int, bool) {
	return Threshold(c.Hits[0], c.Hits[1:], c.N, x)
}

// Run ranks the channels on the clean set and prunes them one at a time,
// counting hits on the clean and poisoned sets after each step.
func Run(ctx context.Context, cfg Config) (*Curve, error) {
	m := cfg.Model
	if err := CheckLayers(m, cfg.Layer, cfg.RankLayer); err != nil {
		return nil, err
	}
	head, err := incr.NewHead(m, cfg.Layer)
	if err != nil {
		return nil, &LayerError{Name: cfg.Layer, Problem: err.Error()}
	}
	defer head.Close()
	defer workpool.SpareP()() // the trunk's and the steps' long cgo calls on every core
	if cfg.Batch < 1 {
		cfg.Batch = 256
	}
	inputs := head.Inputs()
	rankAt := slices.Index(inputs, cfg.RankLayer)
	outputs := inputs
	if rankAt < 0 {
		outputs = append(append([]string{}, inputs...), cfg.RankLayer)
		rankAt = len(outputs) - 1
	}
	// A trunk per worker, each computing whole batches of its own on the
	// goroutine that runs it: one trunk split over the cores waited at
	// every layer for its slowest part (two trunks side by side did 21,200
	// images/s, one split trunk 16,700). Each takes a share of --batch.
	trunks := make([]*infer.Trunk, workpool.Workers())
	size := (cfg.Batch + len(trunks) - 1) / len(trunks) // images a trunk takes
	for i := range trunks {
		if trunks[i], err = infer.NewTrunk(m, size, outputs...); err != nil {
			return nil, err
		}
		defer trunks[i].Close()
		trunks[i].SetSerial(true)
	}

	// Pass 1: the clean set through the trunks, summing the rank layer's
	// channels and keeping the head's inputs for the steps.
	rank := m.Layer(cfg.RankLayer)
	rc := rank.Channels()
	sizes := make([]int, len(inputs))
	cache := make([][]float32, len(inputs))
	for i, name := range inputs {
		sizes[i] = m.Layer(name).Size()
		cache[i] = hugemem.Make[float32](cfg.Valid.N * sizes[i])
	}
	cfg.Progress.Start("ranking on "+cfg.Valid.Path, cfg.Valid.N, "images")
	var mem h5data.Batches // both sets stream through the same memory
	sums := newChannelSums(rc, rank.Size())
	if err := cleanPass(ctx, cfg, trunks, size, &mem, cache, sizes, rankAt, sums); err != nil {
		return nil, err
	}
	per := float64(cfg.Valid.N) * float64(rank.Size()/rc)
	cv := &Curve{Mean: make([]float64, rc), N: cfg.Valid.N}
	for c, s := range sums.total() {
		cv.Mean[c] = s / per
	}
	cv.Order = Rank(cv.Mean)

	// Passes 2 and 3: every step on the clean set, from the cached
	// activations, while the poisoned set streams through the trunk; its
	// steps follow batch by batch.
	steps := len(cv.Order)
	total := cfg.Valid.N
	if cfg.BDValid != nil {
		total += cfg.BDValid.N
		cv.NBD = cfg.BDValid.N
		cv.BDHits = make([]int, steps+1)
	}
	cv.Hits = make([]int, steps+1)
	cfg.Progress.Start("pruning, every step", total, "images")
	var mu sync.Mutex
	var stepErr error // the first error of a job
	// States of finished jobs, whose memory the next jobs reuse.
	free := make(chan *incr.State, workpool.Workers())
	job := func(dst []int, in [][]float32, labels []int, done func()) func() {
		return func() {
			if done != nil {
				defer done()
			}
			var old *incr.State
			select {
			case old = <-free:
			default:
			}
			hits, st, err := steps1(head, old, in, labels, cv.Order, free)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				stepErr = cmp.Or(stepErr, err)
				return
			}
			for k := range hits {
				dst[k] += hits[k]
			}
			cv.Stats.Add(st)
			cfg.Progress.Add(len(labels))
		}
	}
	pool := workpool.New(ctx)
	cleanDone := make(chan struct{})
	go func() {
		defer close(cleanDone)
		for lo := 0; lo < cfg.Valid.N; lo += stepChunk {
			hi := min(lo+stepChunk, cfg.Valid.N)
			in := make([][]float32, len(inputs))
			for i := range inputs {
				in[i] = cache[i][lo*sizes[i] : hi*sizes[i]]
			}
			pool.Go(job(cv.Hits, in, cfg.Valid.Labels[lo:hi], nil))
		}
	}()
	if cfg.BDValid != nil {
		err = bdPass(ctx, cfg.BDValid, pool, trunks, size, &mem, sizes, func(in [][]float32, labels []int, done func()) {
			job(cv.BDHits, in, labels, done)()
		}, func(err error) {
			mu.Lock()
			defer mu.Unlock()
			stepErr = cmp.Or(stepErr, err)
		})
	}
	<-cleanDone
	if werr := pool.Wait(); err == nil {
		err = cmp.Or(werr, stepErr)
	}
	if err != nil {
		return nil, err
	}
	return cv, nil
}

// cleanPass runs the clean set through the trunks, each taking the next batch
// when free, writes the head's inputs into cache at each batch's place,
// and sums the rank layer's channels (output rankAt of the trunks: an
// input of the head, whose rows are then read back from cache, or the one
// after them) batch after batch in the set's order, so that the means do
// not depend on which trunk computed what.
func cleanPass(ctx context.Context, cfg Config, trunks []*infer.Trunk, size int, mem *h5data.Batches,
	cache [][]float32, sizes []int, rankAt int, sums *channelSums) error {
	type job struct {
		b       h5data.Batch
		release func()
		rank    []float32 // the rank layer's rows, unless cached
		err     error
		done    chan struct{}
	}
	jobs := make(chan *job)
	var wg sync.WaitGroup
	for _, t := range trunks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				res, err := t.Run(j.b.X, j.b.N)
				if err == nil {
					for i := range cache {
						copy(cache[i][j.b.Start*sizes[i]:], res[i][:j.b.N*sizes[i]])
					}
					if rankAt >= len(cache) {
						j.rank = append(j.rank[:0], res[rankAt][:j.b.N*sums.size]...)
					}
				}
				j.err = err
				j.release()
				close(j.done)
			}
		}()
	}
	var queue []*job      // sent, not yet summed, in the set's order
	var spare [][]float32 // rank rows of summed jobs, for the next ones
	settle := func() error {
		j := queue[0]
		queue = queue[1:]
		<-j.done
		if j.err != nil {
			return j.err
		}
		rows := j.rank
		if rankAt < len(cache) {
			rows = cache[rankAt][j.b.Start*sizes[rankAt] : (j.b.Start+j.b.N)*sizes[rankAt]]
		}
		sums.add(rows, j.b.N)
		spare = append(spare, j.rank)
		cfg.Progress.Add(j.b.N)
		return nil
	}
	err := cfg.Valid.StreamHeld(ctx, size, len(trunks), mem, func(b h5data.Batch, release func()) error {
		j := &job{b: b, release: release, done: make(chan struct{})}
		if n := len(spare); n > 0 {
			j.rank, spare = spare[n-1], spare[:n-1]
		}
		queue = append(queue, j)
		jobs <- j
		for len(queue) > len(trunks) {
			if err := settle(); err != nil {
				return err
			}
		}
		return nil
	})
	close(jobs)
	for err == nil && len(queue) > 0 {
		err = settle()
	}
	wg.Wait() // every batch released before mem serves the next stream
	return err
}

// bdPass runs the poisoned set through the trunks, each batch a job of
// pool taking whichever trunk is free, and gathers the head's inputs into
// chunks of at least stepChunk samples; the job that fills a chunk then
// runs steps on it, in the place it holds. One trunk at a time left a core
// waiting late in the steps, for the poisoned batches' trunk runs. Samples
// go into chunks in the order their batches finish: a chunk's hits do not
// depend on which samples it holds.
func bdPass(ctx context.Context, set *h5data.Set, pool *workpool.Pool, trunks []*infer.Trunk, size int,
	mem *h5data.Batches, sizes []int, steps func(in [][]float32, labels []int, done func()), fail func(error)) error {
	idle := make(chan *infer.Trunk, len(trunks))
	for _, t := range trunks {
		idle <- t
	}
	type chunk struct {
		in     [][]float32
		labels []int
	}
	var (
		mu    sync.Mutex
		cur   *chunk // being filled
		added int    // samples added to chunks so far
		spare []*chunk
		first error // of a trunk run: stops the stream
	)
	return set.StreamHeld(ctx, size, len(trunks), mem, func(b h5data.Batch, release func()) error {
		mu.Lock()
		stop := first
		mu.Unlock()
		if stop != nil {
			return stop
		}
		pool.Go(func() {
			t := <-idle
			res, err := t.Run(b.X, b.N)
			release()
			mu.Lock()
			if err != nil {
				first = cmp.Or(first, err)
				mu.Unlock()
				idle <- t
				fail(err)
				return
			}
			if cur == nil {
				if n := len(spare); n > 0 {
					cur, spare = spare[n-1], spare[:n-1]
				} else {
					cur = &chunk{in: make([][]float32, len(sizes))}
				}
				for i := range cur.in { // room for the largest chunk
					cur.in[i] = hugemem.Grow(cur.in[i], (stepChunk+size-1)*sizes[i])[:0]
				}
				cur.labels = cur.labels[:0]
			}
			for i := range sizes {
				cur.in[i] = append(cur.in[i], res[i][:b.N*sizes[i]]...)
			}
			cur.labels = append(cur.labels, b.Labels...)
			added += b.N
			var full *chunk
			if len(cur.labels) >= stepChunk || added == set.N {
				full, cur = cur, nil
			}
			mu.Unlock()
			idle <- t
			if full != nil {
				steps(full.in, full.labels, func() {
					mu.Lock()
					spare = append(spare, full)
					mu.Unlock()
				})
			}
		})
		return pool.Err()
	})
}

// channelSums sums a layer's values per channel, image after image. The
// images' values are summed in blocks of meanBlock images, each block's
// sums then added to the total: summed in this order whatever the batch
// size, the means do not depend on it.
type channelSums struct {
	rc, size int // channels; values per image
	images   int // added so far
	sum      []float64
	part     []float64 // of the current block
}

const meanBlock = 256

func newChannelSums(rc, size int) *channelSums {
	return &channelSums{rc: rc, size: size, sum: make([]float64, rc), part: make([]float64, rc)}
}

// add adds the first n images of r (n rows of size values, NHWC).
func (s *channelSums) add(r []float32, n int) {
	for i := 0; i < n; i++ {
		for p := i * s.size; p < (i+1)*s.size; p += s.rc {
			for c, v := range r[p : p+s.rc] {
				s.part[c] += float64(v)
			}
		}
		if s.images++; s.images%meanBlock == 0 {
			s.flush()
		}
	}
}

func (s *channelSums) flush() {
	for c := range s.sum {
		s.sum[c] += s.part[c]
	}
	clear(s.part)
}

// total returns the sums of every image added.
func (s *channelSums) total() []float64 {
	if s.images%meanBlock != 0 {
		s.flush()
	}
	return s.sum
}

// stepChunk is how many samples a job of the steps takes: the states of a
// few hundred samples stay in the caches, and the logits a step recounts
// come in calls of dozens of rows, not a few.
const stepChunk = 256

// steps1 prunes order one channel at a time on a chunk of samples and
// counts the hits before and after each step, in the memory of old (a
// state no longer needed, or nil), which it returns to free.
func steps1(h *incr.Head, old *incr.State, in [][]float32, labels []int, order []int, free chan<- *incr.State) ([]int, incr.Stats, error) {
	s := h.RenewLabeled(old, labels, in...)
	hits := make([]int, len(order)+1)
	hits[0] = metrics.Hits(s.Pred, labels)
	for k, c := range order {
		s.Zero([]int{c})
		hits[k+1] = metrics.Hits(s.Pred, labels)
		// A goroutine that has run for 10 ms without a scheduling point is
		// taken for a hog: Go's monitor takes its P if it finds it in a
		// cgo call, as it mostly would. A job's steps take longer.
		runtime.Gosched()
	}
	st, err := s.Stats, s.Err()
	select {
	case free <- s:
	default:
	}
	return hits, st, err
}

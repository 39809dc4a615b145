// Package repair runs the whole pruning defense on model files: rank the
// channels of a convolutional layer on clean data, prune them one at a time
// recording the curve, write the repaired network B'_X for each threshold
// X, fine-tune each B'_X when asked, and write the logs. A run publishes
// its outputs all at once when it has succeeded, and leaves nothing
// otherwise.
package repair

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"

	"badprune/internal/dataset"
	"badprune/internal/finetune"
	"badprune/internal/h5data"
	"badprune/internal/model"
	"badprune/internal/outdir"
	"badprune/internal/progress"
	"badprune/internal/prune"
	"badprune/internal/report"
	"badprune/internal/train"
)

// Config is one run of the defense.
type Config struct {
	Model string // the backdoored network B
	// Architecture is a model.to_json() file giving the architecture of a
	// weights-only Keras model file (model.LoadOptions); "" for none.
	Architecture string
	Valid        string // the clean validation set
	BDValid      string // the poisoned validation set; "" for none
	Data         dataset.Options
	Thresholds   []float64 // accuracy drops (points) at which to save B'_X
	Layer        string    // the Conv2D layer to prune; "" for prune.DefaultLayer
	RankLayer    string    // the layer that ranks its channels; "" for prune.DefaultRankLayer
	Out          string    // the output folder
	Force        bool      // replace existing outputs

	// Finetune, when not nil, fine-tunes each B'_X on the clean set; its
	// OnEpoch is not called (see OnEpoch).
	Finetune *finetune.Options
	// OnEpoch, if set, sees each fine-tuning epoch of the B' in file.
	OnEpoch func(file string, e finetune.Epoch)
}

// Result is a completed run.
type Result struct {
	Log       report.PruneLog
	N, NBD    int       // images in the clean and poisoned validation sets
	Unreached []float64 // thresholds the accuracy never fell by: no B' for them
	Files     []string  // every file the run published
	Ext       string    // the extension of the model format, in the B' names
}

// Last is the curve's final point: every channel pruned.
func (r *Result) Last() report.Step {
	if len(r.Log.Steps) == 0 {
		return report.Step{Valid: report.Valid{ValidAcc: r.Log.BaseAcc, ValidASR: r.Log.BaseASR}}
	}
	return r.Log.Steps[len(r.Log.Steps)-1]
}

// Run runs the defense as cfg says, reporting progress on rep.
func Run(ctx context.Context, cfg Config, rep *progress.Reporter) (*Result, error) {
	res, err := run(ctx, cfg, rep)
	return res, folderFull(cfg.Out, err)
}

func run(ctx context.Context, cfg Config, rep *progress.Reporter) (*Result, error) {
	b, err := ReadModel(cfg.Model, cfg.Architecture)
	if err != nil {
		return nil, err
	}
	layer, rank, err := Layers(b, cfg.Layer, cfg.RankLayer)
	if err != nil {
		return nil, err
	}
	// Every output is known before the work starts: fail now, not after it.
	ext := b.Ext()
	names := []string{report.PruneLogJSON, report.PruneLogCSV}
	for _, x := range cfg.Thresholds {
		names = append(names, report.RepairedName(x, ext))
		if cfg.Finetune != nil {
			names = append(names, report.FinetunedName(x, ext))
		}
	}
	need := int64(0)
	if st, err := os.Stat(cfg.Model); err == nil {
		need = st.Size() * int64(len(names)-2)
	}
	inputs := []string{cfg.Model, cfg.Valid}
	if cfg.BDValid != "" {
		inputs = append(inputs, cfg.BDValid)
	}
	run, err := outdir.Begin(cfg.Out, names, outdir.Options{Force: cfg.Force, Need: need, Inputs: inputs})
	if err != nil {
		return nil, err
	}
	defer run.Abort()
	valid, bd, err := openSets(cfg.Data, b, cfg.Valid, cfg.BDValid)
	if err != nil {
		return nil, err
	}
	defer closeSets(valid, bd)

	curve, err := prune.Run(ctx, prune.Config{Model: b, Layer: layer, RankLayer: rank, Valid: valid, BDValid: bd, Batch: cfg.Data.Batch, Progress: rep})
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res := &Result{N: curve.N, NBD: curve.NBD, Ext: ext}
	log := &res.Log
	*log = report.PruneLog{Model: cfg.Model, Valid: cfg.Valid, Norm: report.Norm{Mean: cfg.Data.Mean, Std: cfg.Data.Std}, Layer: layer, RankLayer: rank,
		BaseAcc: curve.Step(0).Acc, MeanActivation: curve.Mean, Order: curve.Order,
		Thresholds: cfg.Thresholds, Saved: map[string]report.Saved{}}
	if bd != nil {
		bdPath := cfg.BDValid
		log.BDValid = &bdPath
		log.BaseASR = rate(curve.Step(0).ASR)
	}
	curve.Each(func(s prune.Step) {
		log.Steps = append(log.Steps, report.Step{Step: s.K, Channel: s.Channel, Fraction: s.Fraction, Valid: report.Valid{ValidAcc: s.Acc, ValidASR: rate(s.ASR)}})
	})

	var ft *fineTuner
	if cfg.Finetune != nil {
		ft = &fineTuner{cfg: cfg, b: b}
	}
	for _, x := range cfg.Thresholds {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k, ok := curve.Saved(x)
		if !ok {
			res.Unreached = append(res.Unreached, x)
			continue
		}
		st := curve.Step(k)
		pruned := slices.Clone(curve.Order[:k])
		slices.Sort(pruned)
		bp, err := b.PrunedCopy(layer, pruned)
		if err != nil {
			return nil, err
		}
		name := report.RepairedName(x, ext)
		if err := bp.WriteCopy(run.Path(name), true, bp.Pruned(layer)...); err != nil {
			return nil, err
		}
		saved := report.Saved{Step: k, File: run.Final(name), Valid: report.Valid{ValidAcc: st.Acc, ValidASR: rate(st.ASR)}, Pruned: pruned}
		if ft != nil {
			ftName := report.FinetunedName(x, ext)
			if saved.Finetune, err = ft.run(ctx, bp, layer, name, run.Path(ftName), run.Final(ftName)); err != nil {
				return nil, err
			}
		}
		log.Saved[report.ThresholdName(x)] = saved
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := report.Write(run.Path(report.PruneLogJSON), log, true); err != nil {
		return nil, err
	}
	if err := os.WriteFile(run.Path(report.PruneLogCSV), report.CurveCSV(log), 0o644); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if res.Files, err = run.Commit(); err != nil {
		return nil, err
	}
	return res, nil
}

// Layers resolves the layer to prune and the rank layer, choosing defaults
// for empty names, and checks them. A name may be any a layer answers to
// (model.Model.Resolve); the layers' own names are returned.
func Layers(b *model.Model, layer, rank string) (string, string, error) {
	var err error
	if l, ok := b.Resolve(layer); ok {
		layer = l
	}
	if r, ok := b.Resolve(rank); ok {
		rank = r
	}
	if layer == "" {
		if layer, err = prune.DefaultLayer(b); err != nil {
			return "", "", fmt.Errorf("%s: %w", b.Path, err)
		}
	}
	if rank == "" {
		rank = prune.DefaultRankLayer(b, layer)
	}
	if err := prune.CheckLayers(b, layer, rank); err != nil {
		return "", "", fmt.Errorf("%s: %w", b.Path, err)
	}
	return layer, rank, nil
}

// fineTuner fine-tunes the saved B' of one run; the sets are read once, on
// first use.
type fineTuner struct {
	cfg       Config
	b         *model.Model
	clean, bd train.Data
}

// run fine-tunes bp, B pruned at layer, and writes it to path.
func (f *fineTuner) run(ctx context.Context, bp *model.Model, layer, name, path, final string) (*report.Finetune, error) {
	if f.clean.N() == 0 {
		var err error
		if f.clean, err = f.cfg.Data.Load(ctx, f.cfg.Valid, f.b); err != nil {
			return nil, err
		}
		if f.cfg.BDValid != "" {
			if f.bd, err = f.cfg.Data.Load(ctx, f.cfg.BDValid, f.b); err != nil {
				return nil, err
			}
		}
	}
	opt := *f.cfg.Finetune
	opt.OnEpoch = nil
	if f.cfg.OnEpoch != nil {
		opt.OnEpoch = func(e finetune.Epoch) { f.cfg.OnEpoch(name, e) }
	}
	m := bp.Clone()
	res, err := finetune.Run(ctx, m, f.clean, f.bd, opt)
	if err != nil {
		return nil, fmt.Errorf("fine-tuning %s: %w", name, err)
	}
	// The copy is of B's file: besides what fine-tuning trained, it takes
	// what pruning changed that training does not (BatchNormalization).
	written := finetune.Trained(m)
	for _, l := range m.Pruned(layer) {
		if !slices.Contains(written, l) {
			written = append(written, l)
		}
	}
	if err := m.WriteCopy(path, true, written...); err != nil {
		return nil, err
	}
	return res.Report(final), nil
}

// ReadModel reads a model file of any format (model.Read); arch, when not
// "", is the architecture of a weights-only Keras file (model.LoadWith).
func ReadModel(path, arch string) (*model.Model, error) {
	if arch != "" {
		return model.LoadWith(path, model.LoadOptions{Architecture: arch})
	}
	return model.Read(path)
}

// folderFull makes a full disk met while writing a staged file an error
// about the output folder the user named, not the hidden staging file.
func folderFull(dir string, err error) error {
	var ns *outdir.NoSpaceError
	if err != nil && outdir.IsNoSpace(err) && !errors.As(err, &ns) {
		return &outdir.NoSpaceError{Dir: dir}
	}
	return err
}

// rate is a percentage for the log: nil when not measured (NaN).
func rate(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}

// openSets opens a clean set and, when bdPath is not "", a poisoned one,
// both for b.
func openSets(d dataset.Options, b *model.Model, cleanPath, bdPath string) (clean, bd *h5data.Set, err error) {
	if clean, err = d.Open(cleanPath, b); err != nil {
		return nil, nil, err
	}
	if bdPath != "" {
		if bd, err = d.Open(bdPath, b); err != nil {
			clean.Close()
			return nil, nil, err
		}
	}
	return clean, bd, nil
}

func closeSets(sets ...*h5data.Set) {
	for _, s := range sets {
		if s != nil {
			s.Close()
		}
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"badprune/internal/finetune"
	"badprune/internal/model"
	"badprune/internal/report"
	"badprune/internal/train"
)

// finetuneFlags are the fine-tuning settings finetune and repair share.
type finetuneFlags struct {
	Optimizer string
	L2        float64
	Cosine    bool
	Epochs    int
	LR        float64
	Batch     int
	Holdout   float64
	Seed      uint64
	Patience  int
}

func (f *finetuneFlags) bind(c *cobra.Command, prefix string) {
	fs := c.Flags()
	fs.IntVar(&f.Epochs, prefix+"epochs", 10, "fine-tuning epochs (at most)")
	fs.StringVar(&f.Optimizer, prefix+"optimizer", "adam", "fine-tuning optimizer: adam, or momentum (SGD with momentum 0.9)")
	fs.Float64Var(&f.L2, prefix+"l2", 0, "fine-tuning weight decay (L2 coefficient added to the gradients)")
	fs.BoolVar(&f.Cosine, prefix+"cosine", true, "lower the learning rate along a half cosine over the epochs")
	fs.Float64Var(&f.LR, prefix+"lr", 1e-3, "fine-tuning learning rate (Adam)")
	fs.IntVar(&f.Batch, prefix+"batch", 64, "fine-tuning batch size")
	fs.Float64Var(&f.Holdout, prefix+"holdout", 0.2, "share of the clean set kept out of training, for early stopping and reporting")
	fs.Uint64Var(&f.Seed, prefix+"seed", 1, "seed of the holdout split and the batch order")
	fs.IntVar(&f.Patience, prefix+"patience", 3, "stop after this many epochs without a better holdout accuracy (0: run every epoch)")
}

func (f *finetuneFlags) check(prefix string) error {
	switch {
	case f.Epochs < 1 || f.Epochs > 10000:
		return fmt.Errorf("--%sepochs %d: want 1..10000", prefix, f.Epochs)
	case !(f.LR > 0 && f.LR < 1):
		return fmt.Errorf("--%slr %v: want a rate between 0 and 1", prefix, f.LR)
	case f.Batch < 1 || f.Batch > 4096:
		return fmt.Errorf("--%sbatch %d: want 1..4096", prefix, f.Batch)
	case !(f.Holdout > 0 && f.Holdout < 1):
		return fmt.Errorf("--%sholdout %v: want a share between 0 and 1", prefix, f.Holdout)
	case !(f.L2 >= 0 && f.L2 < 1):
		return fmt.Errorf("--%sl2 %v: want 0 <= L2 < 1", prefix, f.L2)
	case f.Optimizer != "adam" && f.Optimizer != "momentum":
		return fmt.Errorf("--%soptimizer %q: want adam or momentum", prefix, f.Optimizer)
	case f.Patience < 0:
		return fmt.Errorf("--%spatience %d: want 0 or more", prefix, f.Patience)
	}
	return nil
}

func (f *finetuneFlags) options(log io.Writer, name string) finetune.Options {
	return finetune.Options{Optimizer: f.Optimizer, L2: f.L2, Cosine: f.Cosine, Epochs: f.Epochs, LR: f.LR, Batch: f.Batch, Holdout: f.Holdout, Seed: f.Seed, Patience: f.Patience,
		OnEpoch: func(e finetune.Epoch) {
			if log == nil {
				return
			}
			fmt.Fprintf(log, "%s: epoch %d: loss %.4f, holdout accuracy %.2f%%", name, e.Epoch, e.Loss, e.HoldoutAcc)
			if !math.IsNaN(e.HoldoutASR) {
				fmt.Fprintf(log, ", attack success %.2f%%", e.HoldoutASR)
			}
			fmt.Fprintln(log)
		}}
}

type finetuneOptions struct {
	ios     ioStreams
	Model   string
	Valid   string
	BDValid string
	Out     string
	Force   bool
	Quiet   bool
	data    dataFlags
	ft      finetuneFlags

	bdValidSet bool
}

func newFinetuneCmd(ios ioStreams) *cobra.Command {
	o := &finetuneOptions{ios: ios}
	c := &cobra.Command{
		Use:   "finetune --model B_PRUNED.h5 --out F.h5",
		Short: "Fine-tune a pruned network on clean data, its pruned channels held at zero",
		Long: `Fine-Pruning's second step: train the pruned network B' further on the
clean validation set (all but a held-out share), keeping every pruned channel
(a Conv2D or Dense output whose kernel slice and bias are zero) at zero. The
epoch with the best holdout accuracy is kept and written as a copy of the
input file in which only weight datasets change.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o.bdValidSet = c.Flags().Changed("bd-valid")
			return runFinetune(c.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.Model, "model", "", "the pruned network B' (Keras HDF5), e.g. out/repaired_4.h5")
	f.StringVar(&o.Valid, "valid", "data/cl/valid.h5", "clean data to fine-tune on")
	f.StringVar(&o.BDValid, "bd-valid", "data/bd/bd_valid.h5", "poisoned set for the attack success per epoch (used when it exists, unless given)")
	f.StringVar(&o.Out, "out", "", "the fine-tuned network to write")
	f.BoolVar(&o.Force, "force", false, "overwrite an existing --out")
	f.BoolVarP(&o.Quiet, "quiet", "q", false, "no progress on stderr")
	o.data.bind(c, false)
	o.ft.bind(c, "")
	return c
}

// loadSet reads a whole set into memory.
func loadSet(ctx context.Context, d *dataFlags, path string, m *model.Model) (train.Data, error) {
	s, err := d.open(path, m)
	if err != nil {
		return train.Data{}, err
	}
	defer s.Close()
	x, err := s.ReadAll(ctx)
	if err != nil {
		return train.Data{}, err
	}
	return train.Data{X: x, Labels: s.Labels}, nil
}

func runFinetune(ctx context.Context, o *finetuneOptions) error {
	if o.Model == "" || o.Out == "" {
		return fmt.Errorf("finetune needs --model (the pruned network) and --out (the file to write)")
	}
	if err := o.data.check(); err != nil {
		return err
	}
	if err := o.ft.check(""); err != nil {
		return err
	}
	bdPath := o.BDValid
	if !o.bdValidSet && !exists(bdPath) {
		bdPath = ""
	}
	if err := outputsFree([]string{o.Out}, []string{o.Model, o.Valid, bdPath}, o.Force); err != nil {
		return err
	}
	m, err := model.Load(o.Model)
	if err != nil {
		return err
	}
	clean, err := loadSet(ctx, &o.data, o.Valid, m)
	if err != nil {
		return err
	}
	var bd train.Data
	if bdPath != "" {
		if bd, err = loadSet(ctx, &o.data, bdPath, m); err != nil {
			return err
		}
	}
	log := o.ios.Err
	if o.Quiet {
		log = nil
	}
	res, err := finetune.Run(ctx, m, clean, bd, o.ft.options(log, filepath.Base(o.Model)))
	if err != nil {
		return fmt.Errorf("%s: %w", o.Model, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.WriteCopy(o.Out, o.Force, finetune.Trained(m)...); err != nil {
		return err
	}
	printFinetune(o.ios.Out, o.Model, o.Out, res)
	return nil
}

func printFinetune(w io.Writer, in, out string, res *finetune.Result) {
	var held []string
	for l, ch := range res.Masks {
		held = append(held, fmt.Sprintf("%s (%d channels)", l, len(ch)))
	}
	if len(held) == 0 {
		held = []string{"none"}
	}
	last := res.Epochs[len(res.Epochs)-1]
	best := res.Epochs[0]
	for _, e := range res.Epochs {
		if e.Epoch == res.Best {
			best = e
		}
	}
	fmt.Fprintf(w, "fine-tuned %s: pruned channels held at zero: %s\n", in, strings.Join(held, ", "))
	fmt.Fprintf(w, "ran %d epochs; kept epoch %d: holdout accuracy %.2f%%", last.Epoch, res.Best, best.HoldoutAcc)
	if !math.IsNaN(best.HoldoutASR) {
		fmt.Fprintf(w, ", attack success %.2f%% (before: %.2f%%)", best.HoldoutASR, res.Epochs[0].HoldoutASR)
	}
	fmt.Fprintf(w, "\nwrote %s\n", out)
}

// history converts a run for prune_log.json.
func history(file string, res *finetune.Result) *report.Finetune {
	h := &report.Finetune{File: file, Best: res.Best}
	for _, e := range res.Epochs {
		ep := report.Epoch{Epoch: e.Epoch, Loss: e.Loss, HoldoutAcc: e.HoldoutAcc, HoldoutASR: asrPtr(e.HoldoutASR)}
		if math.IsNaN(ep.Loss) {
			ep.Loss = 0 // epoch 0 has not trained
		}
		h.Epochs = append(h.Epochs, ep)
	}
	return h
}

// finetuneSaved fine-tunes a repaired network for repair --finetune.
func finetuneSaved(ctx context.Context, o *repairOptions, bp *model.Model, name string, clean, bd train.Data, log io.Writer) (*report.Finetune, error) {
	ft := bp.Clone()
	res, err := finetune.Run(ctx, ft, clean, bd, o.ft.options(log, name))
	if err != nil {
		return nil, fmt.Errorf("fine-tuning %s: %w", name, err)
	}
	file := filepath.Join(o.Out, "finetuned_"+strings.TrimPrefix(name, "repaired_"))
	if err := ft.WriteCopy(file, o.Force, finetune.Trained(ft)...); err != nil {
		return nil, err
	}
	return history(file, res), nil
}

package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"badprune/internal/dataset"
	"badprune/internal/finetune"
	"badprune/internal/h5data"
	"badprune/internal/outdir"
	"badprune/internal/progress"
	"badprune/internal/prune"
)

// The lab's folder layout: inside it the defaults just work.
const (
	defModel   = "models/bd_net.h5"
	defValid   = "data/cl/valid.h5"
	defBDValid = "data/bd/bd_valid.h5"
	defTest    = "data/cl/test.h5"
	defBDTest  = "data/bd/bd_test.h5"
	defOut     = "out/"
)

// bindModel binds --model to model, with the default and help given, and
// --architecture to arch.
func bindModel(c *cobra.Command, model, arch *string, def, help string) {
	c.Flags().StringVar(model, "model", def, help)
	c.Flags().StringVar(arch, "architecture", "", "the architecture (Keras model.to_json()) of weights-only model files; without it they are taken for the lab's DeepID")
}

// writeFlags are the options of the commands that write outputs and
// report progress.
type writeFlags struct {
	Out          string
	Force, Quiet bool
}

func (w *writeFlags) bind(c *cobra.Command, out, outHelp, forceHelp string) {
	c.Flags().StringVar(&w.Out, "out", out, outHelp)
	c.Flags().BoolVar(&w.Force, "force", false, forceHelp)
	c.Flags().BoolVarP(&w.Quiet, "quiet", "q", false, "no progress on stderr")
}

// tuneFlags are the options of the commands that prune or train a network
// B on its clean validation set, with the poisoned one when there is one,
// and write the networks they make: repair and finetune.
type tuneFlags struct {
	ios     ioStreams
	Model   string
	Arch    string
	Valid   string
	BDValid string
	writeFlags
	data dataFlags
	ft   finetuneFlags
}

// bindPixels binds --scale, --mean and --std: how pixels are scaled, then
// normalized as PyTorch's data loaders do.
func bindPixels(c *cobra.Command, o *dataset.Options) {
	o.Scale = 1
	c.Flags().Var((*ratio)(&o.Scale), "scale", "multiply every pixel by this, a number or a fraction such as 1/255 (the lab's B takes raw 0..255)")
	c.Flags().Float64SliceVar(&o.Mean, "mean", nil, "then subtract this from every pixel: one value, or one per channel (as PyTorch's Normalize)")
	c.Flags().Float64SliceVar(&o.Std, "std", nil, "then divide every pixel by this: one value, or one per channel")
}

// dataFlags are the options of every command that reads sets.
type dataFlags struct{ dataset.Options }

func (d *dataFlags) bind(c *cobra.Command, batch bool) {
	d.Batch = dataset.DefaultBatch
	c.Flags().StringVar(&d.DataKey, "data-key", "data", "name of the images dataset in the data files")
	c.Flags().StringVar(&d.LabelKey, "label-key", "label", "name of the labels dataset in the data files")
	bindPixels(c, &d.Options)
	if batch {
		c.Flags().IntVar(&d.Batch, "batch", dataset.DefaultBatch, "images per batch")
	}
}

func (d *dataFlags) check() error {
	if d.Batch < 1 || d.Batch > 1<<16 {
		return fmt.Errorf("--batch %d: want 1..65536", d.Batch)
	}
	if d.DataKey == "" || d.LabelKey == "" {
		return errors.New("--data-key and --label-key must not be empty")
	}
	return nil
}

// optionalSet is the poisoned set to use: path when given on the command
// line (it must then exist) or when it exists, else none.
func optionalSet(c *cobra.Command, flag, path string) string {
	if c.Flags().Changed(flag) {
		return path
	}
	if _, err := os.Stat(path); err != nil {
		return ""
	}
	return path
}

// finetuneFlags are the fine-tuning settings finetune and repair share.
type finetuneFlags struct{ finetune.Options }

func (f *finetuneFlags) bind(c *cobra.Command, prefix string) {
	fs := c.Flags()
	fs.IntVar(&f.Epochs, prefix+"epochs", 10, "fine-tuning epochs (at most)")
	fs.StringVar(&f.Optimizer, prefix+"optimizer", "adam", "fine-tuning optimizer: adam, or momentum (SGD with momentum 0.9)")
	fs.Float64Var(&f.L2, prefix+"l2", 0, "fine-tuning weight decay: L2·w added to the gradients (with momentum: L2 times the velocity)")
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

// printEpoch writes one fine-tuning epoch of the network name to w.
func printEpoch(w io.Writer, name string, e finetune.Epoch) {
	fmt.Fprintf(w, "%s: epoch %d: loss %.4f, holdout accuracy %.2f%%", name, e.Epoch, e.Loss, e.HoldoutAcc)
	if !math.IsNaN(e.HoldoutASR) {
		fmt.Fprintf(w, ", attack success %.2f%%", e.HoldoutASR)
	}
	if e.Seconds > 0 {
		fmt.Fprintf(w, " (trained on %d images in %.2f s: %.0f images/s)", e.Images, e.Seconds, float64(e.Images)/e.Seconds)
	}
	fmt.Fprintln(w)
}

// reporter shows progress on w unless quiet: a bar on a terminal, plain
// lines otherwise.
func reporter(w io.Writer, quiet bool) *progress.Reporter {
	if quiet {
		return progress.New(nil, false)
	}
	return progress.New(w, progress.IsTerminal(w) || os.Getenv(envTTY) == "1")
}

// ratio is a number flag that also takes a fraction, as in --scale 1/255.
type ratio float64

func (r *ratio) String() string { return strconv.FormatFloat(float64(*r), 'g', -1, 64) }
func (r *ratio) Type() string   { return "number" }

func (r *ratio) Set(s string) error {
	num, den, frac := strings.Cut(s, "/")
	v, err := strconv.ParseFloat(num, 64)
	if err == nil && frac {
		var d float64
		d, err = strconv.ParseFloat(den, 64)
		v /= d
	}
	if err != nil || !(v > 0 && v <= 1e30) {
		return errors.New("want a positive number or a fraction such as 1/255")
	}
	*r = ratio(v)
	return nil
}

// pct formats an optional percentage.
func pct(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", *v)
}

// userMessage is err as the user reads it: the library's terms mapped to
// the flags that change them.
func userMessage(err error) string {
	msg := err.Error()
	var le *prune.LayerError
	if errors.As(err, &le) {
		flag := "--layer"
		if le.Rank {
			flag = "--rank-layer"
		}
		msg = strings.Replace(msg, le.Error(), fmt.Sprintf("%s %s: %s", flag, le.Name, le.Problem), 1)
	}
	var ne *h5data.NormError
	var ke *h5data.KeyError
	var ee *outdir.ExistsError
	var ie *outdir.InputError
	switch {
	case errors.As(err, &ne):
		msg = strings.Replace(msg, ne.Error(), "--"+ne.Error(), 1)
	case errors.Is(err, prune.ErrNoDefaultLayer):
		msg += "; choose one with --layer"
	case errors.As(err, &ke) && ke.Labels:
		msg += " (choose another with --label-key)"
	case errors.As(err, &ke):
		msg += " (choose another with --data-key)"
	case errors.As(err, &ee):
		msg += " (use --force to overwrite)"
	case errors.As(err, &ie):
		msg += "; choose another --out"
	case outdir.IsNoSpace(err):
		msg += "; nothing of this run was left, earlier files are untouched"
	}
	return msg
}

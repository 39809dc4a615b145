package main

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"badprune/internal/finetune"
	"badprune/internal/repair"
	"badprune/internal/report"
)

type repairOptions struct {
	tuneFlags
	Thresholds []float64
	Layer      string
	RankLayer  string
	Finetune   bool
}

func newRepairCmd(ios ioStreams) *cobra.Command {
	o := &repairOptions{tuneFlags: tuneFlags{ios: ios}}
	c := &cobra.Command{
		Use:   "repair",
		Short: "Prune the backdoored network B channel by channel and save the repaired networks B'",
		Long: `Rank the channels of a convolutional layer (default: the one whose pooled
output feeds the first Dense layer, conv_3 in the lab's DeepID) by their mean
activation on the clean validation set, prune them one at a time in ascending
order (kernel slice and bias set to zero), and record validation accuracy and,
with a poisoned validation set, attack success after every step.

For each threshold X, the repaired network B'_X is B at the first step whose
accuracy is at least X points below B's; it is written as repaired_<X>.h5, a
copy of the model file in which only the pruned layer's kernel and bias
changed. The whole curve goes to prune_log.json and prune_log.csv.

The outputs are published together when the run succeeds; a run that fails
or is interrupted leaves none of them.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o.BDValid = optionalSet(c, "bd-valid", o.BDValid)
			return runRepair(c, o)
		},
	}
	f := c.Flags()
	bindModel(c, &o.Model, &o.Arch, defModel, "the backdoored network B (Keras HDF5 or .keras, or ONNX)")
	f.StringVar(&o.Valid, "valid", defValid, "clean validation set")
	f.StringVar(&o.BDValid, "bd-valid", defBDValid, "poisoned validation set (used when it exists, unless given)")
	f.Float64SliceVar(&o.Thresholds, "threshold", []float64{2, 4, 10, 30}, "accuracy drops X (points, 0 < X <= 100) at which to save B'_X; a list or repeated")
	f.StringVar(&o.Layer, "layer", "", "the Conv2D or SeparableConv2D layer to prune (default: the last convolution before the classifier)")
	f.StringVar(&o.RankLayer, "rank-layer", "", "the layer whose mean activation ranks the channels (default: the last layer after --layer carrying its channels, e.g. its pooling)")
	o.writeFlags.bind(c, defOut, "output folder", "overwrite existing outputs")
	f.BoolVar(&o.Finetune, "finetune", false, "fine-tune each saved B' on the clean validation set (writes finetuned_<X>.h5; settings --ft-*)")
	o.data.bind(c, true)
	o.ft.bind(c, "ft-")
	return c
}

func checkThresholds(xs []float64) ([]float64, error) {
	if len(xs) == 0 {
		return nil, fmt.Errorf("--threshold: give at least one")
	}
	var out []float64
	for _, x := range xs {
		if math.IsNaN(x) || x <= 0 || x > 100 {
			return nil, fmt.Errorf("--threshold %v: want a number of points with 0 < X <= 100", x)
		}
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out, nil
}

func runRepair(c *cobra.Command, o *repairOptions) error {
	if err := o.data.check(); err != nil {
		return err
	}
	ths, err := checkThresholds(o.Thresholds)
	if err != nil {
		return err
	}
	cfg := repair.Config{Model: o.Model, Architecture: o.Arch, Valid: o.Valid, BDValid: o.BDValid, Data: o.data.Options,
		Thresholds: ths, Layer: o.Layer, RankLayer: o.RankLayer, Out: o.Out, Force: o.Force}
	if o.Finetune {
		if err := o.ft.check("ft-"); err != nil {
			return err
		}
		cfg.Finetune = &o.ft.Options
		if !o.Quiet {
			cfg.OnEpoch = func(name string, e finetune.Epoch) { printEpoch(o.ios.Err, name, e) }
		}
	}
	res, err := repair.Run(c.Context(), cfg, reporter(o.ios.Err, o.Quiet))
	if err != nil {
		return err
	}
	log := &res.Log
	for _, x := range res.Unreached {
		t := report.ThresholdName(x)
		fmt.Fprintf(o.ios.Err, "warning: threshold %s: accuracy never fell %s points below %.2f%% (%.2f%% with every channel pruned); no %s\n",
			t, t, log.BaseAcc, res.Last().ValidAcc, report.RepairedName(x, res.Ext))
	}
	w := o.ios.Out
	fmt.Fprintf(w, "B: %s; pruned %s (%d channels), ranked by mean activation of %s on %s (%d images)\n",
		log.Model, log.Layer, len(log.Order), log.RankLayer, log.Valid, res.N)
	fmt.Fprintf(w, "B's validation accuracy %.2f%%", log.BaseAcc)
	if log.BaseASR != nil {
		fmt.Fprintf(w, ", attack success %.2f%% on %s (%d images)", *log.BaseASR, *log.BDValid, res.NBD)
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "threshold\tstep\tpruned %\tvalid acc %\tattack success %\tfile\t")
	for _, x := range log.Thresholds {
		s, ok := log.Saved[report.ThresholdName(x)]
		if !ok {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\tnot reached\t\n", report.ThresholdName(x))
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.2f\t%s\t%s\t\n", report.ThresholdName(x), s.Step,
			100*float64(s.Step)/float64(len(log.Order)), s.ValidAcc, pct(s.ValidASR), s.File)
		if s.Finetune != nil {
			fmt.Fprintf(tw, "\t\t\t\t\t%s\t\n", s.Finetune.File)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nwrote %s and %s\n", filepath.Join(o.Out, report.PruneLogJSON), filepath.Join(o.Out, report.PruneLogCSV))
	return nil
}

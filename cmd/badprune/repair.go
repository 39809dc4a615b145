package main

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"badprune/internal/atomicfile"
	"badprune/internal/h5data"
	"badprune/internal/model"
	"badprune/internal/prune"
	"badprune/internal/report"
	"badprune/internal/train"
)

type repairOptions struct {
	ios        ioStreams
	Model      string
	Valid      string
	BDValid    string
	Thresholds []float64
	Layer      string
	RankLayer  string
	Out        string
	Force      bool
	Quiet      bool
	data       dataFlags
	ft         finetuneFlags
	Finetune   bool

	bdValidSet bool
}

func newRepairCmd(ios ioStreams) *cobra.Command {
	o := &repairOptions{ios: ios}
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
changed. The whole curve goes to prune_log.json and prune_log.csv.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o.bdValidSet = c.Flags().Changed("bd-valid")
			return runRepair(c, o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.Model, "model", "models/bd_net.h5", "the backdoored network B (Keras HDF5)")
	f.StringVar(&o.Valid, "valid", "data/cl/valid.h5", "clean validation set")
	f.StringVar(&o.BDValid, "bd-valid", "data/bd/bd_valid.h5", "poisoned validation set (used when it exists, unless given)")
	f.Float64SliceVar(&o.Thresholds, "threshold", []float64{2, 4, 10, 30}, "accuracy drops X (points, 0 < X <= 100) at which to save B'_X; a list or repeated")
	f.StringVar(&o.Layer, "layer", "", "the Conv2D layer to prune (default: the one feeding the first Dense layer)")
	f.StringVar(&o.RankLayer, "rank-layer", "", "the layer whose mean activation ranks the channels (default: the pooling layer after --layer)")
	f.StringVar(&o.Out, "out", "out/", "output folder")
	f.BoolVar(&o.Force, "force", false, "overwrite existing outputs")
	f.BoolVarP(&o.Quiet, "quiet", "q", false, "no progress on stderr")
	f.BoolVar(&o.Finetune, "finetune", false, "fine-tune each saved B' on the clean validation set (writes finetuned_<X>.h5; settings --ft-*)")
	o.data.bind(c, true)
	o.ft.bind(c, "ft-")
	return c
}

// thresholdName is how a threshold appears in file names and JSON keys.
func thresholdName(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

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

// outputsFree checks that no output overwrites an input, and without force
// that none exists.
func outputsFree(outs, inputs []string, force bool) error {
	for _, o := range outs {
		for _, in := range inputs {
			if in != "" && atomicfile.SameFile(o, in) {
				return fmt.Errorf("%s: output would overwrite the input %s; choose another --out", o, in)
			}
		}
		if err := atomicfile.CheckFree(o, force); err != nil {
			return err
		}
	}
	return nil
}

func runRepair(c *cobra.Command, o *repairOptions) error {
	ctx := c.Context()
	if err := o.data.check(); err != nil {
		return err
	}
	ths, err := checkThresholds(o.Thresholds)
	if err != nil {
		return err
	}
	if o.Finetune {
		if err := o.ft.check("ft-"); err != nil {
			return err
		}
	}
	bdPath := o.BDValid
	if !o.bdValidSet && !exists(bdPath) {
		bdPath = ""
	}
	b, err := model.Load(o.Model)
	if err != nil {
		return err
	}
	layer := o.Layer
	if layer == "" {
		if layer, err = prune.DefaultLayer(b); err != nil {
			return fmt.Errorf("%s: %w", o.Model, err)
		}
	}
	rank := o.RankLayer
	if rank == "" {
		rank = prune.DefaultRankLayer(b, layer)
	}
	if err := prune.CheckLayers(b, layer, rank); err != nil {
		return fmt.Errorf("%s: %w", o.Model, err)
	}
	// Every output is known before the work starts: fail now, not after it.
	logJSON, logCSV := filepath.Join(o.Out, "prune_log.json"), filepath.Join(o.Out, "prune_log.csv")
	outs := []string{logJSON, logCSV}
	for _, x := range ths {
		outs = append(outs, filepath.Join(o.Out, "repaired_"+thresholdName(x)+".h5"))
		if o.Finetune {
			outs = append(outs, filepath.Join(o.Out, "finetuned_"+thresholdName(x)+".h5"))
		}
	}
	if err := outputsFree(outs, []string{o.Model, o.Valid, bdPath}, o.Force); err != nil {
		return err
	}
	valid, err := o.data.open(o.Valid, b)
	if err != nil {
		return err
	}
	defer valid.Close()
	var bd *h5data.Set
	if bdPath != "" {
		if bd, err = o.data.open(bdPath, b); err != nil {
			return err
		}
		defer bd.Close()
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return fmt.Errorf("--out %s: %w", o.Out, osErr(err))
	}
	rep := reporter(o.ios.Err, o.Quiet)
	curve, err := prune.Run(ctx, prune.Config{Model: b, Layer: layer, RankLayer: rank, Valid: valid, BDValid: bd, Batch: o.data.Batch, Progress: rep})
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	log := report.PruneLog{Model: o.Model, Valid: o.Valid, Layer: layer, RankLayer: rank,
		BaseAcc: curve.Step(0).Acc, MeanActivation: curve.Mean, Order: curve.Order,
		Thresholds: ths, Saved: map[string]report.Saved{}}
	if bd != nil {
		log.BDValid = &bdPath
		asr := curve.Step(0).ASR
		log.BaseASR = &asr
	}
	var ftClean, ftBD train.Data // loaded once, for --finetune
	curve.Each(func(s prune.Step) {
		log.Steps = append(log.Steps, report.Step{Step: s.K, Channel: s.Channel, Fraction: s.Fraction, ValidAcc: s.Acc, ValidASR: asrPtr(s.ASR)})
	})
	for _, x := range ths {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, ok := curve.Saved(x)
		if !ok {
			last := curve.Step(len(curve.Order))
			fmt.Fprintf(o.ios.Err, "warning: threshold %s: accuracy never fell %s points below %.2f%% (%.2f%% with every channel pruned); no repaired_%s.h5\n",
				thresholdName(x), thresholdName(x), log.BaseAcc, last.Acc, thresholdName(x))
			continue
		}
		st := curve.Step(k)
		pruned := slices.Clone(curve.Order[:k])
		slices.Sort(pruned)
		bp := b.Clone()
		if err := bp.PruneChannels(layer, pruned); err != nil {
			return err
		}
		file := filepath.Join(o.Out, "repaired_"+thresholdName(x)+".h5")
		if err := bp.WriteCopy(file, o.Force, layer); err != nil {
			return err
		}
		saved := report.Saved{Step: k, File: file, ValidAcc: st.Acc, ValidASR: asrPtr(st.ASR), Pruned: pruned}
		if o.Finetune {
			if ftClean.N() == 0 {
				if ftClean, err = loadSet(ctx, &o.data, o.Valid, b); err != nil {
					return err
				}
				if bdPath != "" {
					if ftBD, err = loadSet(ctx, &o.data, bdPath, b); err != nil {
						return err
					}
				}
			}
			var ftLog io.Writer = o.ios.Err
			if o.Quiet {
				ftLog = nil
			}
			if saved.Finetune, err = finetuneSaved(ctx, o, bp, "repaired_"+thresholdName(x)+".h5", ftClean, ftBD, ftLog); err != nil {
				return err
			}
		}
		log.Saved[thresholdName(x)] = saved
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := report.Write(logJSON, log, o.Force); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(logCSV, curveCSV(log), o.Force); err != nil {
		return err
	}
	printRepair(o, log, curve.N, curve.NBD)
	return nil
}

func asrPtr(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}

func curveCSV(log report.PruneLog) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write([]string{"step", "channel", "fraction", "valid_acc", "valid_asr"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	asr := ""
	if log.BaseASR != nil {
		asr = f(*log.BaseASR)
	}
	w.Write([]string{"0", "", "0", f(log.BaseAcc), asr})
	for _, s := range log.Steps {
		asr := ""
		if s.ValidASR != nil {
			asr = f(*s.ValidASR)
		}
		w.Write([]string{strconv.Itoa(s.Step), strconv.Itoa(s.Channel), f(s.Fraction), f(s.ValidAcc), asr})
	}
	w.Flush()
	return buf.Bytes()
}

func printRepair(o *repairOptions, log report.PruneLog, n, nbd int) {
	w := o.ios.Out
	fmt.Fprintf(w, "B: %s; pruned %s (%d channels), ranked by mean activation of %s on %s (%d images)\n",
		log.Model, log.Layer, len(log.Order), log.RankLayer, log.Valid, n)
	fmt.Fprintf(w, "B's validation accuracy %.2f%%", log.BaseAcc)
	if log.BaseASR != nil {
		fmt.Fprintf(w, ", attack success %.2f%% on %s (%d images)", *log.BaseASR, *log.BDValid, nbd)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "threshold\tstep\tpruned %\tvalid acc %\tattack success %\tfile\t")
	for _, x := range log.Thresholds {
		s, ok := log.Saved[thresholdName(x)]
		if !ok {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\tnot reached\t\n", thresholdName(x))
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.2f\t%s\t%s\t\n", thresholdName(x), s.Step,
			100*float64(s.Step)/float64(len(log.Order)), s.ValidAcc, pct(s.ValidASR), s.File)
		if s.Finetune != nil {
			fmt.Fprintf(tw, "\t\t\t\t\t%s\t\n", s.Finetune.File)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nwrote %s and %s\n", filepath.Join(o.Out, "prune_log.json"), filepath.Join(o.Out, "prune_log.csv"))
}

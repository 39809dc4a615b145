package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"badprune/internal/plot"
	"badprune/internal/report"
)

type plotOptions struct {
	ios      ioStreams
	Log      string
	Eval     string
	Out      string
	Finetune bool
	Force    bool

	logSet, evalSet bool
}

func newPlotCmd(ios ioStreams) *cobra.Command {
	o := &plotOptions{ios: ios}
	c := &cobra.Command{
		Use:   "plot",
		Short: "Draw the pruning curve, and the GoodNet's results from eval --goodnet",
		Long: `Draw prune_curve.png and .svg from repair's prune_log.json (validation
accuracy and attack success against the share of channels pruned, thresholds
marked), and goodnet.png and .svg from the JSON of eval --goodnet (clean
accuracy and attack success of each G(B, B'), B for reference). With
--finetune, finetune.png and .svg from the fine-tuning history in the log.
A bare 'badprune plot' after repair and eval --goodnet draws both.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o.logSet, o.evalSet = c.Flags().Changed("log"), c.Flags().Changed("eval")
			return runPlot(o)
		},
	}
	c.Flags().StringVar(&o.Log, "log", "out/prune_log.json", "repair's log")
	c.Flags().StringVar(&o.Eval, "eval", "out/eval.json", "the JSON of eval --goodnet (drawn when it exists, unless given)")
	c.Flags().StringVar(&o.Out, "out", "out/", "output folder")
	c.Flags().BoolVar(&o.Finetune, "finetune", false, "also draw the fine-tuning history (repair --finetune)")
	c.Flags().BoolVar(&o.Force, "force", false, "overwrite existing figures")
	return c
}

func runPlot(o *plotOptions) error {
	drawLog := o.logSet || exists(o.Log) || !o.evalSet
	drawEval := o.evalSet || exists(o.Eval)
	if !drawLog && !drawEval {
		return errors.New("nothing to draw")
	}
	var log report.PruneLog
	if drawLog {
		if err := report.Read(o.Log, &log); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return fmt.Errorf("--out %s: %w", o.Out, osErr(err))
	}
	var written []string
	add := func(paths []string, err error) error {
		written = append(written, paths...)
		return err
	}
	if drawLog {
		p, err := plot.PruneCurve(&log)
		if err != nil {
			return fmt.Errorf("%s: %w", o.Log, err)
		}
		if err := add(plot.Save(p, o.Out, "prune_curve", o.Force)); err != nil {
			return err
		}
		if o.Finetune {
			p, err := plot.FinetuneHistory(&log)
			if err != nil {
				return fmt.Errorf("%s: %w", o.Log, err)
			}
			if err := add(plot.Save(p, o.Out, "finetune", o.Force)); err != nil {
				return err
			}
		}
	}
	if drawEval {
		var ev report.Eval
		if err := report.Read(o.Eval, &ev); err != nil {
			return err
		}
		p, err := plot.GoodnetBars(&ev)
		if err != nil {
			return fmt.Errorf("%s: %w", o.Eval, err)
		}
		if err := add(plot.Save(p, o.Out, "goodnet", o.Force)); err != nil {
			return err
		}
	}
	for _, w := range written {
		fmt.Fprintf(o.ios.Out, "wrote %s\n", filepath.Clean(w))
	}
	return nil
}

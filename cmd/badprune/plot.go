package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	gplot "gonum.org/v1/plot"

	"badprune/internal/outdir"
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
	c.Flags().StringVar(&o.Log, "log", filepath.Join(defOut, report.PruneLogJSON), "repair's log")
	c.Flags().StringVar(&o.Eval, "eval", filepath.Join(defOut, report.EvalJSON), "the JSON of eval --goodnet (drawn when it exists, unless given)")
	c.Flags().StringVar(&o.Out, "out", defOut, "output folder")
	c.Flags().BoolVar(&o.Finetune, "finetune", false, "also draw the fine-tuning history (repair --finetune)")
	c.Flags().BoolVar(&o.Force, "force", false, "overwrite existing figures")
	return c
}

// figure is one drawing: its base name, the document it is drawn from,
// and how to draw and save it into a folder.
type figure struct {
	name, from string
	save       func(dir string) error
}

func newFigure[T any](name, from string, doc *T, draw func(*T) (*gplot.Plot, error)) figure {
	return figure{name, from, func(dir string) error {
		p, err := draw(doc)
		if err != nil {
			return fmt.Errorf("%s: %w", from, err)
		}
		_, err = plot.Save(p, dir, name, true)
		return err
	}}
}

func runPlot(o *plotOptions) error {
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	drawLog := o.logSet || exists(o.Log) || !o.evalSet
	drawEval := o.evalSet || exists(o.Eval)
	if !drawLog && !drawEval {
		return errors.New("nothing to draw")
	}
	var figs []figure
	if drawLog {
		var log report.PruneLog
		if err := report.Read(o.Log, &log); err != nil {
			return err
		}
		figs = append(figs, newFigure("prune_curve", o.Log, &log, plot.PruneCurve))
		if o.Finetune {
			figs = append(figs, newFigure("finetune", o.Log, &log, plot.FinetuneHistory))
		}
	}
	if drawEval {
		var ev report.Eval
		if err := report.Read(o.Eval, &ev); err != nil {
			return err
		}
		figs = append(figs, newFigure("goodnet", o.Eval, &ev, plot.GoodnetBars))
	}
	var names []string
	for _, f := range figs {
		names = append(names, plot.Files(f.name)...)
	}
	run, err := outdir.Begin(o.Out, names, outdir.Options{Force: o.Force, Inputs: []string{o.Log, o.Eval}})
	if err != nil {
		return err
	}
	defer run.Abort()
	for _, f := range figs {
		if err := f.save(filepath.Dir(run.Path(names[0]))); err != nil {
			return err
		}
	}
	written, err := run.Commit()
	if err != nil {
		return err
	}
	for _, w := range written {
		fmt.Fprintf(o.ios.Out, "wrote %s\n", filepath.Clean(w))
	}
	return nil
}

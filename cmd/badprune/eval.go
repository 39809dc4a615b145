package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"badprune/internal/repair"
	"badprune/internal/report"
)

type evalOptions struct {
	ios      ioStreams
	Model    string
	Arch     string
	Test     string
	BDTest   string
	Repaired []string
	Goodnet  bool
	JSON     bool
	writeFlags
	MaxASR float64
	MinAcc float64
	data   dataFlags

	outSet         bool // --out given: write eval.json even with --json
	maxASR, minAcc bool // the gates given
}

func newEvalCmd(ios ioStreams) *cobra.Command {
	o := &evalOptions{ios: ios}
	c := &cobra.Command{
		Use:   "eval",
		Short: "Clean accuracy and attack success of B, and with --goodnet of each B' and G(B, B')",
		Long: `Evaluate the backdoored network B on a clean test set and a poisoned one.
With --goodnet, also evaluate each repaired network B' and the GoodNet G(B, B'),
which outputs the class B and B' agree on and flags the input as poisoned
(class N, the number of classes) where they disagree.

Percentages are 0-100. Attack success is the share of poisoned inputs given
their label, the attacker's target. With --goodnet the results also go to
eval.json in --out (for plot); with --json they go to stdout only, unless
--out is given.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o.BDTest = optionalSet(c, "bd-test", o.BDTest)
			o.maxASR, o.minAcc = c.Flags().Changed("max-asr"), c.Flags().Changed("min-acc")
			o.outSet = c.Flags().Changed("out")
			if !c.Flags().Changed("repaired") && !o.Goodnet {
				o.Repaired = nil
			}
			return runEval(c, o)
		},
	}
	f := c.Flags()
	bindModel(c, &o.Model, &o.Arch, defModel, "the backdoored network B (Keras HDF5 or .keras, or ONNX)")
	f.StringVar(&o.Test, "test", defTest, "clean test set")
	f.StringVar(&o.BDTest, "bd-test", defBDTest, "poisoned test set (used when it exists, unless given)")
	f.BoolVar(&o.Goodnet, "goodnet", false, "also evaluate each repaired B' and the GoodNet G(B, B')")
	f.StringSliceVar(&o.Repaired, "repaired", []string{defOut}, "repaired networks: files, globs, or a repair output folder (all its repaired_*)")
	o.writeFlags.bind(c, defOut, "folder for eval.json (with --goodnet)", "overwrite an existing eval.json")
	f.BoolVar(&o.JSON, "json", false, "print one JSON document to stdout instead of a table (and write no file unless --out is given)")
	f.Float64Var(&o.MaxASR, "max-asr", 0, "CI gate: fail (exit 3) when a G row's (B's without --goodnet) attack success is above this percentage")
	f.Float64Var(&o.MinAcc, "min-acc", 0, "CI gate: fail (exit 3) when a G row's (B's without --goodnet) clean accuracy is below this percentage")
	o.data.bind(c, true)
	return c
}

func checkPercent(name string, v float64) error {
	if v != v || v < 0 || v > 100 {
		return fmt.Errorf("%s %v: want a percentage 0..100", name, v)
	}
	return nil
}

func runEval(c *cobra.Command, o *evalOptions) error {
	if err := o.data.check(); err != nil {
		return err
	}
	if o.maxASR {
		if err := checkPercent("--max-asr", o.MaxASR); err != nil {
			return err
		}
	}
	if o.minAcc {
		if err := checkPercent("--min-acc", o.MinAcc); err != nil {
			return err
		}
	}
	if !o.Goodnet && len(o.Repaired) > 0 {
		return errors.New("--repaired needs --goodnet")
	}
	cfg := repair.EvalConfig{Model: o.Model, Architecture: o.Arch, Test: o.Test, BDTest: o.BDTest, Data: o.data.Options, Force: o.Force}
	if o.Goodnet {
		if len(o.Repaired) == 0 {
			return errors.New("--goodnet needs --repaired (files, globs or a repair output folder)")
		}
		var err error
		if cfg.Repaired, err = report.RepairedFiles(o.Repaired); err != nil {
			var nr *report.NoRepairedError
			if errors.As(err, &nr) {
				return fmt.Errorf("--repaired %v; make them with 'badprune repair --out %s', or name the networks with --repaired FILE", err, nr.Dir)
			}
			return fmt.Errorf("--repaired %w", err)
		}
		if !o.JSON || o.outSet {
			cfg.JSON = filepath.Join(o.Out, report.EvalJSON)
		}
	}
	ev, err := repair.Evaluate(c.Context(), cfg, reporter(o.ios.Err, o.Quiet))
	if err != nil {
		return err
	}
	if o.JSON {
		enc := json.NewEncoder(o.ios.Out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(ev.Doc); err != nil {
			return err
		}
	} else {
		printEvalTable(o.ios.Out, ev.Doc, ev.Classes)
		if cfg.JSON != "" {
			fmt.Fprintf(o.ios.Out, "\nwrote %s\n", cfg.JSON)
		}
	}
	return checkGates(o, ev.Doc)
}

// networkName is the network a row is about.
func networkName(r report.Row) string {
	if r.Repaired != "" {
		return r.Repaired
	}
	return r.File
}

func printEvalTable(w io.Writer, doc report.Eval, classes int) {
	fmt.Fprintf(w, "clean test:    %s (%d images)\n", doc.Test, doc.NTest)
	if doc.BDTest != nil {
		fmt.Fprintf(w, "poisoned test: %s (%d images)\n", *doc.BDTest, doc.NBDTest)
	}
	goodnetRows := len(doc.Results) > 1
	if goodnetRows {
		fmt.Fprintf(w, "G flags an input as poisoned (label %d) where B and B' disagree.\n", classes)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if goodnetRows {
		fmt.Fprintln(tw, "model\tnetwork\tclean acc %\tattack success %\tclean flagged %\tpoisoned flagged %\t")
	} else {
		fmt.Fprintln(tw, "model\tnetwork\tclean acc %\tattack success %\t")
	}
	for _, r := range doc.Results {
		cf, bf := "", ""
		if r.Model == report.RoleGoodNet {
			cf, bf = pct(r.CleanFlagged), pct(r.BDFlagged)
		}
		if goodnetRows {
			fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%s\t%s\t\n", r.Model, networkName(r), r.CleanAcc, pct(r.ASR), cf, bf)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t\n", r.Model, networkName(r), r.CleanAcc, pct(r.ASR))
		}
	}
	tw.Flush()
}

// checkGates applies --max-asr and --min-acc to the G rows (the B row
// without --goodnet).
func checkGates(o *evalOptions, doc report.Eval) error {
	if !o.maxASR && !o.minAcc {
		return nil
	}
	want := report.RoleB
	if o.Goodnet {
		want = report.RoleGoodNet
	}
	var bad []string
	for _, r := range doc.Results {
		if r.Model != want {
			continue
		}
		name := networkName(r)
		if o.maxASR {
			if r.ASR == nil {
				bad = append(bad, fmt.Sprintf("%s row %s: no poisoned set to check --max-asr against", want, name))
			} else if *r.ASR > o.MaxASR {
				bad = append(bad, fmt.Sprintf("%s row %s: attack success %.2f%% > --max-asr %g", want, name, *r.ASR, o.MaxASR))
			}
		}
		if o.minAcc && r.CleanAcc < o.MinAcc {
			bad = append(bad, fmt.Sprintf("%s row %s: clean accuracy %.2f%% < --min-acc %g", want, name, r.CleanAcc, o.MinAcc))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return &gateError{msg: "gate failed: " + strings.Join(bad, "; ")}
}

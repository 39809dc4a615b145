package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"badprune/internal/atomicfile"
	"badprune/internal/goodnet"
	"badprune/internal/h5data"
	"badprune/internal/infer"
	"badprune/internal/model"
	"badprune/internal/report"
)

type evalOptions struct {
	ios      ioStreams
	Model    string
	Test     string
	BDTest   string
	Repaired []string
	Goodnet  bool
	Out      string
	JSON     bool
	Force    bool
	Quiet    bool
	MaxASR   float64
	MinAcc   float64
	data     dataFlags

	bdTestSet bool // --bd-test given explicitly
	gates     gateFlags
}

type gateFlags struct{ maxASR, minAcc bool }

// dataFlags are the options every command that reads sets shares.
type dataFlags struct {
	DataKey  string
	LabelKey string
	Scale    float64
	Batch    int
}

func (d *dataFlags) bind(c *cobra.Command, batch bool) {
	d.Batch = infer.DefaultBatch
	c.Flags().StringVar(&d.DataKey, "data-key", "data", "name of the images dataset in the data files")
	c.Flags().StringVar(&d.LabelKey, "label-key", "label", "name of the labels dataset in the data files")
	c.Flags().Float64Var(&d.Scale, "scale", 1, "multiply every pixel by this (the lab's B takes raw 0..255)")
	if batch {
		c.Flags().IntVar(&d.Batch, "batch", infer.DefaultBatch, "images per batch")
	}
}

func (d *dataFlags) check() error {
	if d.Scale <= 0 || d.Scale != d.Scale || d.Scale > 1e30 {
		return fmt.Errorf("--scale %v: want a positive number", d.Scale)
	}
	if d.Batch < 1 || d.Batch > 1<<16 {
		return fmt.Errorf("--batch %d: want 1..65536", d.Batch)
	}
	if d.DataKey == "" || d.LabelKey == "" {
		return errors.New("--data-key and --label-key must not be empty")
	}
	return nil
}

// open opens a set that must fit m.
func (d *dataFlags) open(path string, m *model.Model) (*h5data.Set, error) {
	h, w, c := m.InputShape()
	return h5data.Open(path, h5data.Options{DataKey: d.DataKey, LabelKey: d.LabelKey,
		H: h, W: w, C: c, Classes: m.Classes, Scale: float32(d.Scale)})
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
their label, the attacker's target.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o.bdTestSet = c.Flags().Changed("bd-test")
			o.gates = gateFlags{c.Flags().Changed("max-asr"), c.Flags().Changed("min-acc")}
			if !c.Flags().Changed("repaired") && !o.Goodnet {
				o.Repaired = nil
			}
			return runEval(c, o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.Model, "model", "models/bd_net.h5", "the backdoored network B (Keras HDF5)")
	f.StringVar(&o.Test, "test", "data/cl/test.h5", "clean test set")
	f.StringVar(&o.BDTest, "bd-test", "data/bd/bd_test.h5", "poisoned test set (used when it exists, unless given)")
	f.BoolVar(&o.Goodnet, "goodnet", false, "also evaluate each repaired B' and the GoodNet G(B, B')")
	f.StringSliceVar(&o.Repaired, "repaired", []string{"out/"}, "repaired networks: files, globs, or a repair output folder (all its repaired_*.h5)")
	f.StringVar(&o.Out, "out", "out/", "folder for eval.json (with --goodnet)")
	f.BoolVar(&o.JSON, "json", false, "print one JSON document instead of a table")
	f.BoolVar(&o.Force, "force", false, "overwrite an existing eval.json")
	f.BoolVarP(&o.Quiet, "quiet", "q", false, "no progress on stderr")
	f.Float64Var(&o.MaxASR, "max-asr", 0, "CI gate: fail (exit 3) when a G row's (B's without --goodnet) attack success is above this percentage")
	f.Float64Var(&o.MinAcc, "min-acc", 0, "CI gate: fail (exit 3) when a G row's (B's without --goodnet) clean accuracy is below this percentage")
	o.data.bind(c, true)
	return c
}

// resolveRepaired expands files, globs and folders into model files.
func resolveRepaired(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		if st, err := os.Stat(a); err == nil && st.IsDir() {
			m, _ := filepath.Glob(filepath.Join(a, "repaired_*.h5"))
			if len(m) == 0 {
				return nil, fmt.Errorf("--repaired %s: folder holds no repaired_*.h5 (run 'badprune repair' first)", a)
			}
			sortRepaired(m)
			out = append(out, m...)
			continue
		}
		if strings.ContainsAny(a, "*?[") {
			m, err := filepath.Glob(a)
			if err != nil {
				return nil, fmt.Errorf("--repaired %s: %v", a, err)
			}
			if len(m) == 0 {
				return nil, fmt.Errorf("--repaired %s: no file matches", a)
			}
			sortRepaired(m)
			out = append(out, m...)
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// sortRepaired orders repaired_<X>.h5 files by X, others by name.
func sortRepaired(files []string) {
	key := func(f string) (float64, bool) {
		var x float64
		b := filepath.Base(f)
		if !strings.HasPrefix(b, "repaired_") || !strings.HasSuffix(b, ".h5") {
			return 0, false
		}
		_, err := fmt.Sscanf(strings.TrimSuffix(strings.TrimPrefix(b, "repaired_"), ".h5"), "%g", &x)
		return x, err == nil
	}
	sort.SliceStable(files, func(i, j int) bool {
		a, aok := key(files[i])
		b, bok := key(files[j])
		if aok && bok {
			return a < b
		}
		if aok != bok {
			return aok
		}
		return files[i] < files[j]
	})
}

func checkPercent(name string, v float64) error {
	if v != v || v < 0 || v > 100 {
		return fmt.Errorf("%s %v: want a percentage 0..100", name, v)
	}
	return nil
}

func runEval(c *cobra.Command, o *evalOptions) error {
	ctx := c.Context()
	if err := o.data.check(); err != nil {
		return err
	}
	if o.gates.maxASR {
		if err := checkPercent("--max-asr", o.MaxASR); err != nil {
			return err
		}
	}
	if o.gates.minAcc {
		if err := checkPercent("--min-acc", o.MinAcc); err != nil {
			return err
		}
	}
	if !o.Goodnet && len(o.Repaired) > 0 {
		return errors.New("--repaired needs --goodnet")
	}
	var repairedFiles []string
	if o.Goodnet {
		if len(o.Repaired) == 0 {
			return errors.New("--goodnet needs --repaired (files, globs or a repair output folder)")
		}
		var err error
		if repairedFiles, err = resolveRepaired(o.Repaired); err != nil {
			return err
		}
	}
	bdPath := o.BDTest
	if !o.bdTestSet && !exists(bdPath) {
		bdPath = ""
	}
	jsonPath := ""
	if o.Goodnet {
		jsonPath = filepath.Join(o.Out, "eval.json")
		if err := os.MkdirAll(o.Out, 0o755); err != nil {
			return fmt.Errorf("--out %s: %w", o.Out, osErr(err))
		}
		if err := atomicfile.CheckFree(jsonPath, o.Force); err != nil {
			return err
		}
	}

	b, err := model.Load(o.Model)
	if err != nil {
		return err
	}
	var repaired []*model.Model
	for _, f := range repairedFiles {
		r, err := model.Load(f)
		if err != nil {
			return err
		}
		if err := compatible(b, r); err != nil {
			return err
		}
		repaired = append(repaired, r)
	}
	test, err := o.data.open(o.Test, b)
	if err != nil {
		return err
	}
	defer test.Close()
	var bd *h5data.Set
	if bdPath != "" {
		if bd, err = o.data.open(bdPath, b); err != nil {
			return err
		}
		defer bd.Close()
	}
	rep := reporter(o.ios.Err, o.Quiet)
	rows, err := goodnet.Evaluate(ctx, b, repaired, test, bd, o.data.Batch, rep)
	if err != nil {
		return err
	}
	doc := report.Eval{Test: o.Test, NTest: test.N, Results: rows}
	if bd != nil {
		doc.BDTest = &bdPath
		doc.NBDTest = bd.N
	}
	if jsonPath != "" {
		if err := report.Write(jsonPath, doc, o.Force); err != nil {
			return err
		}
	}
	if o.JSON {
		enc := json.NewEncoder(o.ios.Out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(doc); err != nil {
			return err
		}
	} else {
		printEvalTable(o.ios.Out, doc, b.Classes)
		if jsonPath != "" {
			fmt.Fprintf(o.ios.Out, "\nwrote %s\n", jsonPath)
		}
	}
	return checkGates(o, doc)
}

// compatible checks that a repaired network can stand beside B in G.
func compatible(b, r *model.Model) error {
	bh, bw, bc := b.InputShape()
	rh, rw, rc := r.InputShape()
	if bh != rh || bw != rw || bc != rc {
		return fmt.Errorf("%s: takes %dx%dx%d inputs but B (%s) takes %dx%dx%d", r.Path, rh, rw, rc, b.Path, bh, bw, bc)
	}
	if b.Classes != r.Classes {
		return fmt.Errorf("%s: has %d classes but B (%s) has %d", r.Path, r.Classes, b.Path, b.Classes)
	}
	return nil
}

func pct(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", *v)
}

func printEvalTable(w interface{ Write([]byte) (int, error) }, doc report.Eval, classes int) {
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
		name := r.File
		if r.Repaired != "" {
			name = r.Repaired
		}
		cf, bf := "", ""
		if r.Model == "G" {
			cf, bf = pct(r.CleanFlagged), pct(r.BDFlagged)
		}
		if goodnetRows {
			fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%s\t%s\t\n", r.Model, name, r.CleanAcc, pct(r.ASR), cf, bf)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t\n", r.Model, name, r.CleanAcc, pct(r.ASR))
		}
	}
	tw.Flush()
}

// checkGates applies --max-asr and --min-acc to the G rows (the B row
// without --goodnet).
func checkGates(o *evalOptions, doc report.Eval) error {
	if !o.gates.maxASR && !o.gates.minAcc {
		return nil
	}
	want := "B"
	if o.Goodnet {
		want = "G"
	}
	var bad []string
	for _, r := range doc.Results {
		if r.Model != want {
			continue
		}
		name := r.File
		if r.Repaired != "" {
			name = r.Repaired
		}
		if o.gates.maxASR {
			if r.ASR == nil {
				bad = append(bad, fmt.Sprintf("%s row %s: no poisoned set to check --max-asr against", want, name))
			} else if *r.ASR > o.MaxASR {
				bad = append(bad, fmt.Sprintf("%s row %s: attack success %.2f%% > --max-asr %g", want, name, *r.ASR, o.MaxASR))
			}
		}
		if o.gates.minAcc && r.CleanAcc < o.MinAcc {
			bad = append(bad, fmt.Sprintf("%s row %s: clean accuracy %.2f%% < --min-acc %g", want, name, r.CleanAcc, o.MinAcc))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return &gateError{msg: "gate failed: " + strings.Join(bad, "; ")}
}

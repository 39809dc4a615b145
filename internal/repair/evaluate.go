package repair

import (
	"context"
	"path/filepath"

	"badprune/internal/dataset"
	"badprune/internal/goodnet"
	"badprune/internal/model"
	"badprune/internal/outdir"
	"badprune/internal/progress"
	"badprune/internal/report"
)

// EvalConfig is an evaluation of B and, for each repaired network B', of
// B' and the GoodNet G(B, B').
type EvalConfig struct {
	Model    string   // B
	Repaired []string // the B' files
	// Architecture is the architecture of weights-only Keras files among
	// B and the B' (Config.Architecture).
	Architecture string
	Test         string // the clean test set
	BDTest       string // the poisoned test set; "" for none
	Data         dataset.Options
	// JSON, when not "", is where the document is written (published only
	// when the whole evaluation succeeded).
	JSON  string
	Force bool
}

// Evaluation is a completed evaluation.
type Evaluation struct {
	Doc     report.Eval
	Classes int // B's classes: G's label for a flagged input
}

// Evaluate evaluates B, each B' and each G on the test sets.
func Evaluate(ctx context.Context, cfg EvalConfig, rep *progress.Reporter) (*Evaluation, error) {
	ev, err := evaluate(ctx, cfg, rep)
	return ev, folderFull(filepath.Dir(cfg.JSON), err)
}

func evaluate(ctx context.Context, cfg EvalConfig, rep *progress.Reporter) (*Evaluation, error) {
	var run *outdir.Run
	if cfg.JSON != "" {
		inputs := append([]string{cfg.Model, cfg.Test, cfg.BDTest}, cfg.Repaired...)
		var err error
		run, err = outdir.Begin(filepath.Dir(cfg.JSON), []string{filepath.Base(cfg.JSON)}, outdir.Options{Force: cfg.Force, Inputs: inputs})
		if err != nil {
			return nil, err
		}
		defer run.Abort()
	}
	b, err := ReadModel(cfg.Model, cfg.Architecture)
	if err != nil {
		return nil, err
	}
	var repaired []*model.Model
	for _, f := range cfg.Repaired {
		r, err := ReadModel(f, cfg.Architecture)
		if err != nil {
			return nil, err
		}
		if err := b.Compatible(r); err != nil {
			return nil, err
		}
		repaired = append(repaired, r)
	}
	test, bd, err := openSets(cfg.Data, b, cfg.Test, cfg.BDTest)
	if err != nil {
		return nil, err
	}
	defer closeSets(test, bd)
	rows, err := goodnet.Evaluate(ctx, b, repaired, test, bd, cfg.Data.Batch, rep)
	if err != nil {
		return nil, err
	}
	ev := &Evaluation{Doc: report.Eval{Test: cfg.Test, Norm: report.Norm{Mean: cfg.Data.Mean, Std: cfg.Data.Std},
		NTest: test.N, Results: rows}, Classes: b.Classes}
	if bd != nil {
		bdPath := cfg.BDTest
		ev.Doc.BDTest = &bdPath
		ev.Doc.NBDTest = bd.N
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if run != nil {
		if err := report.Write(run.Path(filepath.Base(cfg.JSON)), ev.Doc, true); err != nil {
			return nil, err
		}
		if _, err := run.Commit(); err != nil {
			return nil, err
		}
	}
	return ev, nil
}

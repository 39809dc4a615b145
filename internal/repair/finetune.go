package repair

import (
	"context"
	"fmt"
	"path/filepath"

	"badprune/internal/dataset"
	"badprune/internal/finetune"
	"badprune/internal/outdir"
	"badprune/internal/train"
)

// FinetuneConfig is the fine-tuning of one pruned network file.
type FinetuneConfig struct {
	Model string // the pruned network B'
	// Architecture is that of a weights-only Keras B' (Config.Architecture).
	Architecture string
	Valid        string // the clean set to train on
	BDValid      string // a poisoned set for the attack success per epoch; "" for none
	Out          string // the file to write
	Force        bool   // replace an existing Out
	Data         dataset.Options
	Options      finetune.Options
}

// Finetune fine-tunes the network in cfg.Model, its pruned channels held
// at zero, and writes the kept epoch's network to cfg.Out: a copy of the
// input file in which only weights changed.
func Finetune(ctx context.Context, cfg FinetuneConfig) (*finetune.Result, error) {
	res, err := fineTuneFile(ctx, cfg)
	return res, folderFull(filepath.Dir(cfg.Out), err)
}

func fineTuneFile(ctx context.Context, cfg FinetuneConfig) (*finetune.Result, error) {
	m, err := ReadModel(cfg.Model, cfg.Architecture)
	if err != nil {
		return nil, err
	}
	inputs := []string{cfg.Model, cfg.Valid}
	if cfg.BDValid != "" {
		inputs = append(inputs, cfg.BDValid)
	}
	name := filepath.Base(cfg.Out)
	run, err := outdir.Begin(filepath.Dir(cfg.Out), []string{name}, outdir.Options{Force: cfg.Force, Inputs: inputs})
	if err != nil {
		return nil, err
	}
	defer run.Abort()
	clean, err := cfg.Data.Load(ctx, cfg.Valid, m)
	if err != nil {
		return nil, err
	}
	var bd train.Data
	if cfg.BDValid != "" {
		if bd, err = cfg.Data.Load(ctx, cfg.BDValid, m); err != nil {
			return nil, err
		}
	}
	res, err := finetune.Run(ctx, m, clean, bd, cfg.Options)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Model, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := m.WriteCopy(run.Path(name), true, finetune.Trained(m)...); err != nil {
		return nil, err
	}
	if _, err := run.Commit(); err != nil {
		return nil, err
	}
	return res, nil
}

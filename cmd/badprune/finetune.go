package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"badprune/internal/finetune"
	"badprune/internal/repair"
)

type finetuneOptions struct{ tuneFlags }

func newFinetuneCmd(ios ioStreams) *cobra.Command {
	o := &finetuneOptions{tuneFlags{ios: ios}}
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
			o.BDValid = optionalSet(c, "bd-valid", o.BDValid)
			return runFinetune(c, o)
		},
	}
	f := c.Flags()
	bindModel(c, &o.Model, &o.Arch, "", "the pruned network B' (Keras or ONNX), e.g. out/repaired_4.h5")
	f.StringVar(&o.Valid, "valid", defValid, "clean data to fine-tune on")
	f.StringVar(&o.BDValid, "bd-valid", defBDValid, "poisoned set for the attack success per epoch (used when it exists, unless given)")
	o.writeFlags.bind(c, "", "the fine-tuned network to write", "overwrite an existing --out")
	o.data.bind(c, false)
	o.ft.bind(c, "")
	return c
}

func runFinetune(c *cobra.Command, o *finetuneOptions) error {
	if o.Model == "" || o.Out == "" {
		return fmt.Errorf("finetune needs --model (the pruned network) and --out (the file to write)")
	}
	if err := o.data.check(); err != nil {
		return err
	}
	if err := o.ft.check(""); err != nil {
		return err
	}
	opt := o.ft.Options
	if !o.Quiet {
		name := filepath.Base(o.Model)
		opt.OnEpoch = func(e finetune.Epoch) { printEpoch(o.ios.Err, name, e) }
	}
	res, err := repair.Finetune(c.Context(), repair.FinetuneConfig{Model: o.Model, Architecture: o.Arch, Valid: o.Valid, BDValid: o.BDValid,
		Out: o.Out, Force: o.Force, Data: o.data.Options, Options: opt})
	if err != nil {
		return err
	}
	var held []string
	for l, ch := range res.Masks {
		held = append(held, fmt.Sprintf("%s (%d channels)", l, len(ch)))
	}
	slices.Sort(held) // one order, run after run
	if len(held) == 0 {
		held = []string{"none"}
	}
	w, kept := o.ios.Out, res.Kept()
	fmt.Fprintf(w, "fine-tuned %s: pruned channels held at zero: %s\n", o.Model, strings.Join(held, ", "))
	fmt.Fprintf(w, "ran %d epochs; kept epoch %d: holdout accuracy %.2f%%", res.Epochs[len(res.Epochs)-1].Epoch, res.Best, kept.HoldoutAcc)
	if o.BDValid != "" {
		fmt.Fprintf(w, ", attack success %.2f%% (before: %.2f%%)", kept.HoldoutASR, res.Epochs[0].HoldoutASR)
	}
	fmt.Fprintf(w, "\nwrote %s\n", o.Out)
	return nil
}

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"badprune/internal/goodnet"
	"badprune/internal/imageio"
	"badprune/internal/model"
)

type predictOptions struct {
	ios      ioStreams
	Model    string
	Repaired string
	Scale    float64
	Images   []string
}

func newPredictCmd(ios ioStreams) *cobra.Command {
	o := &predictOptions{ios: ios}
	c := &cobra.Command{
		Use:   "predict [flags] IMAGE...",
		Short: "Label PNG or JPEG images: one line per image, 'path<TAB>label'",
		Long: `Label PNG or JPEG images of the model's input size, one line per image:
the path, a tab, the label. With --repaired, the label is the GoodNet's:
B's and B''s common label, or N (the number of classes) when they disagree,
which flags the input as poisoned.

Colours: ` + imageio.Conversions,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			o.Images = args
			return runPredict(o)
		},
	}
	c.Flags().StringVar(&o.Model, "model", defModel, "the network B (Keras HDF5)")
	c.Flags().StringVar(&o.Repaired, "repaired", "", "a repaired network B': print G(B, B')'s label")
	c.Flags().Float64Var(&o.Scale, "scale", 1, "multiply every pixel by this")
	return c
}

func runPredict(o *predictOptions) error {
	if o.Scale <= 0 || o.Scale != o.Scale {
		return fmt.Errorf("--scale %v: want a positive number", o.Scale)
	}
	b, err := model.Load(o.Model)
	if err != nil {
		return err
	}
	var r *model.Model
	if o.Repaired != "" {
		if r, err = model.Load(o.Repaired); err != nil {
			return err
		}
		if err := b.Compatible(r); err != nil {
			return err
		}
	}
	h, w, ch := b.InputShape()
	sz := h * w * ch
	// Decode everything first: a bad image fails before any output.
	x := make([]float32, len(o.Images)*sz)
	for i, p := range o.Images {
		if err := imageio.Load(p, h, w, ch, float32(o.Scale), x[i*sz:(i+1)*sz]); err != nil {
			return err
		}
	}
	labels, err := goodnet.Labels(b, r, x, len(o.Images))
	if err != nil {
		return err
	}
	for i, p := range o.Images {
		fmt.Fprintf(o.ios.Out, "%s\t%d\n", p, labels[i])
	}
	return nil
}

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"badprune/internal/imageio"
	"badprune/internal/repair"
)

type predictOptions struct {
	ios ioStreams
	repair.PredictConfig
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
	bindModel(c, &o.Model, &o.Architecture, defModel, "the network B (Keras HDF5 or .keras, or ONNX)")
	c.Flags().StringVar(&o.Repaired, "repaired", "", "a repaired network B': print G(B, B')'s label")
	bindPixels(c, &o.Data)
	return c
}

func runPredict(o *predictOptions) error {
	labels, err := repair.Predict(o.PredictConfig)
	if err != nil {
		return err
	}
	for i, p := range o.Images {
		fmt.Fprintf(o.ios.Out, "%s\t%d\n", p, labels[i])
	}
	return nil
}

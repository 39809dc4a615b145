package repair

import (
	"badprune/internal/dataset"
	"badprune/internal/goodnet"
	"badprune/internal/model"
)

// PredictConfig is the labelling of image files by B, or by the GoodNet
// G(B, B') when Repaired is given.
type PredictConfig struct {
	Model, Repaired string
	// Architecture is that of weights-only Keras files (Config.Architecture).
	Architecture string
	Images       []string // PNG or JPEG files of the model's input size
	Data         dataset.Options
}

// Predict labels the images: B's class, or G's (the class B and B' agree
// on, or the number of classes where they disagree). Every image is
// decoded before any is labelled, so a bad one fails the whole call.
func Predict(cfg PredictConfig) ([]int, error) {
	b, err := ReadModel(cfg.Model, cfg.Architecture)
	if err != nil {
		return nil, err
	}
	var r *model.Model
	if cfg.Repaired != "" {
		if r, err = ReadModel(cfg.Repaired, cfg.Architecture); err != nil {
			return nil, err
		}
		if err := b.Compatible(r); err != nil {
			return nil, err
		}
	}
	h, w, c := b.InputShape()
	sz := h * w * c
	x := make([]float32, len(cfg.Images)*sz)
	for i, p := range cfg.Images {
		if err := cfg.Data.Image(p, b, x[i*sz:(i+1)*sz]); err != nil {
			return nil, err
		}
	}
	return goodnet.Labels(b, r, x, len(cfg.Images))
}

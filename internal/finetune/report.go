package finetune

import (
	"math"

	"badprune/internal/report"
)

// Report converts r for prune_log.json; file is the fine-tuned network.
func (r *Result) Report(file string) *report.Finetune {
	h := &report.Finetune{File: file, Best: r.Best}
	for _, e := range r.Epochs {
		ep := report.Epoch{Epoch: e.Epoch, Loss: e.Loss, HoldoutAcc: e.HoldoutAcc}
		if math.IsNaN(ep.Loss) {
			ep.Loss = 0 // epoch 0 has not trained
		}
		if !math.IsNaN(e.HoldoutASR) {
			asr := e.HoldoutASR
			ep.HoldoutASR = &asr
		}
		h.Epochs = append(h.Epochs, ep)
	}
	return h
}

// Kept is the record of the epoch whose weights were kept.
func (r *Result) Kept() Epoch {
	for _, e := range r.Epochs {
		if e.Epoch == r.Best {
			return e
		}
	}
	return r.Epochs[0]
}

package goodnet

import (
	"context"

	"badprune/internal/h5data"
	"badprune/internal/infer"
	"badprune/internal/model"
	"badprune/internal/progress"
	"badprune/internal/report"
)

// Evaluate runs B and each repaired B' on the clean set and, when bd is not
// nil, the poisoned set, and returns the rows: B, then for each B' a B' row
// and a G row.
func Evaluate(ctx context.Context, b *model.Model, repaired []*model.Model, test, bd *h5data.Set, batch int, rep *progress.Reporter) ([]report.Row, error) {
	models := append([]*model.Model{b}, repaired...)
	clean, err := infer.Predict(ctx, test, models, batch, rep)
	if err != nil {
		return nil, err
	}
	var poisoned [][]int
	if bd != nil {
		if poisoned, err = infer.Predict(ctx, bd, models, batch, rep); err != nil {
			return nil, err
		}
	}
	asr := func(pred []int) *float64 {
		if bd == nil {
			return nil
		}
		v := Accuracy(pred, bd.Labels)
		return &v
	}
	rows := []report.Row{{Model: "B", File: b.Path, CleanAcc: Accuracy(clean[0], test.Labels), ASR: asr(pick(poisoned, 0))}}
	n := b.Classes
	for i, r := range repaired {
		k := i + 1
		rows = append(rows, report.Row{Model: "B'", File: r.Path, Repaired: r.Path,
			CleanAcc: Accuracy(clean[k], test.Labels), ASR: asr(pick(poisoned, k))})
		gc := Combine(clean[0], clean[k], n)
		row := report.Row{Model: "G", File: b.Path, Repaired: r.Path, CleanAcc: Accuracy(gc, test.Labels)}
		cf := Flagged(gc, n)
		row.CleanFlagged = &cf
		if bd != nil {
			gb := Combine(poisoned[0], poisoned[k], n)
			row.ASR = asr(gb)
			bf := Flagged(gb, n)
			row.BDFlagged = &bf
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func pick(p [][]int, i int) []int {
	if p == nil {
		return nil
	}
	return p[i]
}

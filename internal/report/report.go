// Package report defines badprune's machine-readable outputs, the JSON
// documents of eval and repair, and reads them back for plotting.
package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	"badprune/internal/atomicfile"
)

// Row is one model's results in an Eval.
type Row struct {
	Model    string   `json:"model"` // "B", "B'" or "G"
	File     string   `json:"file"`
	Repaired string   `json:"repaired,omitempty"`
	CleanAcc float64  `json:"clean_acc"`
	ASR      *float64 `json:"asr"` // null without a poisoned set
	// G rows: the percentage of clean and poisoned inputs flagged.
	CleanFlagged *float64 `json:"clean_flagged,omitempty"`
	BDFlagged    *float64 `json:"bd_flagged,omitempty"`
}

// Eval is the document `badprune eval --json` prints.
type Eval struct {
	Test    string  `json:"test"`
	BDTest  *string `json:"bd_test"`
	Norm            // of the test sets' images
	NTest   int     `json:"n_test"`
	NBDTest int     `json:"n_bd_test"`
	Results []Row   `json:"results"`
}

// Norm is the normalization of the images the numbers of a document come
// from, (x*scale - mean) / std; absent when there was none.
type Norm struct {
	Mean []float64 `json:"mean,omitempty"`
	Std  []float64 `json:"std,omitempty"`
}

// Step is one point of the pruning curve.
type Step struct {
	Step     int     `json:"step"`
	Channel  int     `json:"channel"`
	Fraction float64 `json:"fraction"`
	Valid
}

// Valid is a network's clean accuracy on the validation set and, with a
// poisoned set, its attack success, in percent.
type Valid struct {
	ValidAcc float64  `json:"valid_acc"`
	ValidASR *float64 `json:"valid_asr,omitempty"`
}

// Saved is a repaired network written for a threshold.
type Saved struct {
	Step int    `json:"step"`
	File string `json:"file"`
	Valid
	Pruned []int `json:"pruned"`
	// Finetune is the fine-tuning history when repair --finetune ran.
	Finetune *Finetune `json:"finetune,omitempty"`
}

// Epoch is one fine-tuning epoch.
type Epoch struct {
	Epoch      int      `json:"epoch"`
	Loss       float64  `json:"loss"`
	HoldoutAcc float64  `json:"holdout_acc"`
	HoldoutASR *float64 `json:"holdout_asr,omitempty"`
}

// Finetune records a fine-tuning run.
type Finetune struct {
	File   string  `json:"file"`
	Best   int     `json:"best_epoch"`
	Epochs []Epoch `json:"epochs"`
}

// PruneLog is repair's prune_log.json.
type PruneLog struct {
	Model          string           `json:"model"`
	Valid          string           `json:"valid"`
	BDValid        *string          `json:"bd_valid"`
	Norm                            // of the validation sets' images
	Layer          string           `json:"layer"`
	RankLayer      string           `json:"rank_layer"`
	BaseAcc        float64          `json:"base_acc"`
	BaseASR        *float64         `json:"base_asr,omitempty"`
	MeanActivation []float64        `json:"mean_activation"`
	Order          []int            `json:"order"`
	Steps          []Step           `json:"steps"`
	Thresholds     []float64        `json:"thresholds"`
	Saved          map[string]Saved `json:"saved"`
}

// Write writes v as indented JSON to path atomically.
func Write(path string, v any, force bool) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.WriteFile(path, append(b, '\n'), force)
}

// Read reads a JSON document written by Write into v.
func Read(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: not a badprune JSON document: %v", path, err)
	}
	return nil
}

// CurveCSV is the pruning curve of log as CSV, one row per step from the
// unpruned network on: step, channel, fraction, valid_acc, valid_asr.
func CurveCSV(log *PruneLog) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	opt := func(v *float64) string {
		if v == nil {
			return ""
		}
		return f(*v)
	}
	w.Write([]string{"step", "channel", "fraction", "valid_acc", "valid_asr"})
	w.Write([]string{"0", "", "0", f(log.BaseAcc), opt(log.BaseASR)})
	for _, s := range log.Steps {
		w.Write([]string{strconv.Itoa(s.Step), strconv.Itoa(s.Channel), f(s.Fraction), f(s.ValidAcc), opt(s.ValidASR)})
	}
	w.Flush()
	return buf.Bytes()
}

package report

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// The roles of the rows of an Eval.
const (
	RoleB       = "B"  // the network under test
	RoleBPrime  = "B'" // a repaired network
	RoleGoodNet = "G"  // the GoodNet G(B, B')
)

// Output file names of repair. A threshold X appears in them, and in the
// keys of PruneLog.Saved, as ThresholdName(X).
const (
	PruneLogJSON = "prune_log.json"
	PruneLogCSV  = "prune_log.csv"
	EvalJSON     = "eval.json"

	repairedPrefix  = "repaired_"
	finetunedPrefix = "finetuned_"
)

// ThresholdName is how a threshold appears in file names and JSON keys.
func ThresholdName(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

// RepairedName is the file name of B'_X; ext is the model format's file
// extension (".h5", ".keras").
func RepairedName(x float64, ext string) string {
	return repairedPrefix + ThresholdName(x) + ext
}

// FinetunedName is the file name of the fine-tuned B'_X.
func FinetunedName(x float64, ext string) string {
	return finetunedPrefix + ThresholdName(x) + ext
}

// RepairedGlob matches the repaired networks in a folder.
const RepairedGlob = repairedPrefix + "*"

// RepairedThreshold is the X of a file named RepairedName(X, ext).
func RepairedThreshold(file string) (float64, bool) {
	stem, ok := strings.CutPrefix(filepath.Base(file), repairedPrefix)
	if !ok {
		return 0, false
	}
	stem = strings.TrimSuffix(stem, filepath.Ext(stem))
	x, err := strconv.ParseFloat(stem, 64)
	return x, err == nil
}

// NetworkLabel names a network after its file for figures and tables:
// repaired_4.h5 is B'_4; other files keep their base name.
func NetworkLabel(file string) string {
	base := filepath.Base(file)
	stem := strings.TrimSuffix(base, filepath.Ext(base))
	if t, ok := strings.CutPrefix(stem, repairedPrefix); ok && t != "" {
		return "B'_" + t
	}
	return base
}

// SortRepaired orders repaired networks by threshold, other files after
// them by name.
func SortRepaired(files []string) {
	sort.SliceStable(files, func(i, j int) bool {
		a, aok := RepairedThreshold(files[i])
		b, bok := RepairedThreshold(files[j])
		if aok && bok {
			return a < b
		}
		if aok != bok {
			return aok
		}
		return files[i] < files[j]
	})
}

// NoRepairedError is a folder that holds no repaired networks.
type NoRepairedError struct{ Dir string }

func (e *NoRepairedError) Error() string {
	return e.Dir + ": holds no repaired networks (" + RepairedGlob + ") yet"
}

// RepairedFiles expands model files, globs and folders (every repaired
// network in them) into files, each glob's and folder's sorted by
// threshold. A path ending in a separator is a folder even when missing.
func RepairedFiles(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		var m []string
		if st, err := os.Stat(a); err == nil && st.IsDir() || strings.HasSuffix(a, string(filepath.Separator)) {
			if m, _ = filepath.Glob(filepath.Join(a, RepairedGlob)); len(m) == 0 {
				return nil, &NoRepairedError{Dir: a}
			}
		} else if strings.ContainsAny(a, "*?[") {
			var err error
			if m, err = filepath.Glob(a); err != nil {
				return nil, fmt.Errorf("%s: %v", a, err)
			}
			if len(m) == 0 {
				return nil, fmt.Errorf("%s: no file matches", a)
			}
		} else {
			out = append(out, a)
			continue
		}
		SortRepaired(m)
		out = append(out, m...)
	}
	return out, nil
}

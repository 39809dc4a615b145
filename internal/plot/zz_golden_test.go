package plot

import (
	"os"
	"testing"

	"gonum.org/v1/plot"
)

func TestZZGolden(t *testing.T) {
	dir := os.Getenv("ZZ_PLOT_DIR")
	if dir == "" {
		t.Skip()
	}
	all := figures(t)
	add := func(name string, p *plot.Plot, err error) {
		if err != nil {
			t.Fatal(err)
		}
		all[name] = p
	}
	p, err := PruneCurve(pruneLog(false))
	add("prune_noasr", p, err)
	p, err = FinetuneHistory(finetuned(pruneLog(false)))
	add("ft_noasr", p, err)
	p, err = GoodnetBars(eval(false))
	add("bars_noasr", p, err)
	p, err = PruneCurve(packedLog())
	add("packed", p, err)
	for name, p := range all {
		if _, err := Save(p, dir, name, true); err != nil {
			t.Fatal(err)
		}
	}
}

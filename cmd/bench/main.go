// Command bench times badprune at lab scale: repair with full curves on
// valid and bd_valid, eval --goodnet with the four B', one fine-tuning
// epoch, and the trunk alone; each the median of several runs, with peak
// memory. With -peer it also times the independent PyTorch implementation
// on the same files and prints the ratio.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	dir := flag.String("dir", ".cache/bench", "folder with data/ and models/ in the lab's layout")
	bin := flag.String("bin", "bin/badprune", "badprune binary")
	runs := flag.Int("runs", 3, "runs per phase")
	peer := flag.String("peer", "", "the peer's folder (../shared/peer): time it too")
	peerRuns := flag.Int("peer-runs", 1, "runs of the peer (it takes minutes here)")
	flag.Parse()
	if err := run(*dir, *bin, *runs, *peer, *peerRuns); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type sample struct {
	wall time.Duration
	rss  int64  // KiB
	out  string // what the command printed
}

// timed runs a command in dir and returns its wall time and peak RSS.
func timed(dir string, name string, args ...string) (sample, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := os.CreateTemp("", "bench-out")
	if err != nil {
		return sample{}, err
	}
	defer os.Remove(out.Name())
	cmd.Stdout, cmd.Stderr = out, out
	t0 := time.Now()
	err = cmd.Run()
	wall := time.Since(t0)
	if err != nil {
		b, _ := os.ReadFile(out.Name())
		return sample{}, fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	b, _ := os.ReadFile(out.Name())
	return sample{wall, ru.Maxrss, string(b)}, nil
}

func median(s []sample) sample {
	sort.Slice(s, func(i, j int) bool { return s[i].wall < s[j].wall })
	m := s[len(s)/2]
	for _, x := range s {
		m.rss = max(m.rss, x.rss)
	}
	return m
}

// span is the fastest and slowest wall time of ss (sorted by median).
func span(ss []sample) string {
	return fmt.Sprintf("%.2f-%.2f", ss[0].wall.Seconds(), ss[len(ss)-1].wall.Seconds())
}

type phase struct {
	name   string
	images int
	prog   string
	args   []string
}

func run(dir, bin string, runs int, peer string, peerRuns int) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	const nValid, nTest = 11547, 12830
	os.RemoveAll(filepath.Join(dir, "out"))
	// One repair first, so eval and finetune have their B' files.
	if _, err := timed(dir, bin, "repair", "-q", "--force"); err != nil {
		return err
	}
	phases := []phase{
		{"repair (rank + 60 steps on valid and bd_valid)", 2 * nValid, bin, []string{"repair", "-q", "--force"}},
		{"eval --goodnet (B and four B' on test and bd_test)", 2 * nTest, bin, []string{"eval", "--goodnet", "-q", "--force"}},
		// Not quiet: the epoch line gives the training loop's own rate.
		{"finetune, one epoch (99% of valid)", nValid, bin, []string{"finetune", "--model", "out/repaired_4.h5", "--out", "out/ft_bench.h5",
			"--epochs", "1", "--holdout", "0.01", "--bd-valid", "", "--force"}},
	}
	fmt.Printf("badprune at lab scale in %s, median of %d runs (peak RSS: largest)\n\n", dir, runs)
	fmt.Printf("%-55s %9s %13s %11s %10s\n", "phase", "wall s", "range s", "images/s", "peak MiB")
	results := map[string]sample{}
	for _, p := range phases {
		var ss []sample
		for i := 0; i < runs; i++ {
			s, err := timed(dir, p.prog, p.args...)
			if err != nil {
				return err
			}
			ss = append(ss, s)
		}
		m := median(ss)
		results[p.name] = m
		fmt.Printf("%-55s %9.2f %13s %11.0f %10.0f\n", p.name, m.wall.Seconds(), span(ss), float64(p.images)/m.wall.Seconds(), float64(m.rss)/1024)
		if r, ok := loopRate(m.out); ok {
			fmt.Printf("%-55s %9s %13s %11.0f\n", "  its training loop (the epoch line, same run)", "", "", r)
		}
	}
	if peer == "" {
		return nil
	}
	if peer, err = filepath.Abs(peer); err != nil {
		return err
	}
	py := "/usr/bin/python3"
	var ps, fs []sample
	for i := 0; i < peerRuns; i++ {
		s, err := timed(dir, py, filepath.Join(peer, "repair_ref.py"), "models/bd_net.h5", "data/cl/valid.h5", "data/bd/bd_valid.h5", "--mode", "cached")
		if err != nil {
			return err
		}
		ps = append(ps, s)
	}
	// The peer's fine-tuning epoch on the same model and set (batch 64),
	// three times at least (it takes seconds and its speed varies here);
	// the ratio is taken against its fastest run.
	for i := 0; i < max(3, peerRuns); i++ {
		s, err := timed(dir, py, filepath.Join(peer, "finetune_ref.py"), "models/bd_net.h5", "data/cl/valid.h5", "--batch", "64")
		if err != nil {
			return err
		}
		fs = append(fs, s)
	}
	m := median(ps)
	sort.Slice(fs, func(i, j int) bool { return fs[i].wall < fs[j].wall })
	f := fs[0]
	ours, oursFT := results[phases[0].name], results[phases[2].name]
	fmt.Printf("%-55s %9.2f %13s %11.0f %10.0f\n", "peer repair_ref.py --mode cached", m.wall.Seconds(), span(ps), float64(2*nValid)/m.wall.Seconds(), float64(m.rss)/1024)
	fmt.Printf("%-55s %9.2f %13s %11.0f %10.0f\n", "peer finetune_ref.py, one epoch (all of valid), fastest", f.wall.Seconds(), span(fs), float64(nValid)/f.wall.Seconds(), float64(f.rss)/1024)
	fmt.Printf("\nrepair: badprune / peer wall = %.3f (goal <= 0.03)\n", ours.wall.Seconds()/m.wall.Seconds())
	// The peer times its training loop alone; badprune's figure is the whole
	// process (reading, holdout evaluation, writing), so the ratio is a floor.
	var loop float64
	if i := strings.Index(f.out, "images in"); i < 0 {
		fmt.Printf("finetune: no timing in the peer's output: %q\n", f.out)
	} else if _, err := fmt.Sscanf(f.out[i:], "images in %fs", &loop); err == nil && loop > 0 {
		peerRate := float64(nValid) / loop
		ourRate := float64(nValid) * 0.99 / oursFT.wall.Seconds()
		fmt.Printf("finetune: badprune %.0f images/s (whole process) / peer %.0f images/s (its loop) = %.2f (goal >= 2)\n",
			ourRate, peerRate, ourRate/peerRate)
		if r, ok := loopRate(oursFT.out); ok {
			fmt.Printf("finetune: badprune %.0f images/s (its loop) / peer %.0f images/s (its loop) = %.2f\n", r, peerRate, r/peerRate)
		}
	}
	return nil
}

// loopRate is the training loop's images per second that badprune
// finetune prints for its epoch: "... (trained on N images in S s: R
// images/s)".
func loopRate(out string) (float64, bool) {
	i := strings.Index(out, "(trained on ")
	if i < 0 {
		return 0, false
	}
	var n int
	var secs float64
	if _, err := fmt.Sscanf(out[i:], "(trained on %d images in %f s", &n, &secs); err != nil || secs <= 0 {
		return 0, false
	}
	return float64(n) / secs, true
}

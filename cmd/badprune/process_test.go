package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"badprune/internal/model"
	"badprune/internal/testsupport/fixture"
)

// binary is badprune built for the tests that run it as a process: the
// supervisor, signals, and crashes of the C library.
var binary string

func TestMain(m *testing.M) {
	// Fuzzing workers are processes of this test binary started after
	// TestMain: they inherit the variable and reuse the build.
	const env = "BADPRUNE_TEST_BINARY"
	if p := os.Getenv(env); p != "" {
		binary = p
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "badprune-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "badprune")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	os.Setenv(env, binary)
	// A call into the HDF5 library that runs this long is stuck: the
	// runs of these tests (and of the fuzzers, which find such files)
	// end within it.
	os.Setenv("BADPRUNE_HDF5_PATIENCE", "20s")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// execBadprune runs the built binary and returns stdout, stderr and the
// exit code.
func execBadprune(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// noTemps fails if dir holds a temporary file of badprune's writers.
func noTemps(t testing.TB, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", filepath.Join(dir, e.Name()))
		}
	}
}

// execCopy is a copy of the binary under another name: fork.c forks the
// working child only in a program named badprune, so this one starts it
// with exec, the fallback.
func execCopy(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "badprune-exec")
	b, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// childEnviron returns the environment a child of process pid started
// with (/proc/<child>/environ), waiting up to a few seconds for the child.
func childEnviron(t *testing.T, pid int) string {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		stats, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, st := range stats {
			b, err := os.ReadFile(st)
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...: comm may hold spaces
			f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
			if len(f) > 1 && f[1] == strconv.Itoa(pid) {
				env, err := os.ReadFile(filepath.Join(filepath.Dir(st), "environ"))
				if err == nil {
					return string(env)
				}
			}
		}
	}
	t.Fatalf("no child of process %d", pid)
	return ""
}

// TestLibraryHang: a file on which the HDF5 C library loops for ever
// (found by fuzzing: a damaged global heap under a string attribute) ends,
// after the library's patience, in one line naming it and exit 1, with no
// output folder left; whether the working child was forked before Go
// started (fork.c: it runs in the environment the command was given) or
// started with exec (its environment names the report pipe).
func TestLibraryHang(t *testing.T) {
	bad := "../../testdata/crash/hdf5_hang.h5"
	for _, bin := range []string{binary, execCopy(t)} {
		name := filepath.Base(bin)
		out := filepath.Join(t.TempDir(), "out")
		cmd := exec.Command(bin, "repair", "--model", bad, "--valid", tiny+"clean_u8_nchw.h5", "--out", out, "-q")
		cmd.Env = append(os.Environ(), "BADPRUNE_HDF5_PATIENCE=2s")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		execd := strings.Contains(childEnviron(t, cmd.Process.Pid), "BADPRUNE_GUARD_FD=3")
		cmd.Wait()
		if execd != (name != "badprune") {
			t.Errorf("%s: child started with exec: %v", name, execd)
		}
		code, msg := cmd.ProcessState.ExitCode(), stderr.String()
		if code != exitError || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, bad) || !strings.Contains(msg, "did not finish reading it in 2s") {
			t.Fatalf("%s: exit %d, stderr %q", name, code, msg)
		}
		if d := time.Since(start); d > time.Minute {
			t.Errorf("%s: the hung run took %v to end", name, d)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: the hung run left its output folder %s", name, out)
		}
	}
}

// TestLibraryFault: a file on which the HDF5 C library faults (found by
// fuzzing) ends in one line naming it and exit 1, not a crash dump, with
// the child forked before Go started and started with exec.
func TestLibraryFault(t *testing.T) {
	bad := "../../testdata/crash/hdf5_fault.h5"
	for _, bin := range []string{binary, execCopy(t)} {
		// The output folder is created and eval.json staged before the sets
		// are read: the supervisor must remove both.
		out := filepath.Join(t.TempDir(), "out")
		cmd := exec.Command(bin, "eval", "--goodnet", "--model", tiny+"model_full.h5", "--test", bad,
			"--repaired", tiny+"model_weights.h5", "--out", out, "-q")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.Run()
		code, msg := cmd.ProcessState.ExitCode(), stderr.String()
		if code != exitError || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, bad) || !strings.Contains(msg, "HDF5 library crashed") {
			t.Fatalf("%s: exit %d, stderr %q", filepath.Base(bin), code, msg)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: the crashed run left its output folder %s", filepath.Base(bin), out)
		}
	}
}

// TestSignals: SIGTERM or SIGINT during repair leaves no partial file and
// exits 143 or 130.
func TestSignals(t *testing.T) {
	lab := "../../testdata/lab/"
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		out := t.TempDir()
		cmd := exec.Command(binary, "repair", "--model", lab+"models/bd_net.h5", "--valid", lab+"data/cl/valid.h5",
			"--bd-valid", lab+"data/bd/bd_valid.h5", "--out", out, "--batch", "16")
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait until the work has begun, then signal.
		buf := make([]byte, 256)
		var seen []byte
		deadline := time.Now().Add(20 * time.Second)
		for !bytes.Contains(seen, []byte("ranking")) && time.Now().Before(deadline) {
			n, err := stderr.Read(buf)
			seen = append(seen, buf[:n]...)
			if err != nil {
				break
			}
		}
		cmd.Process.Signal(sig)
		go func() { // drain
			for {
				if _, err := stderr.Read(buf); err != nil {
					return
				}
			}
		}()
		cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 128+int(sig) {
			t.Errorf("%v: exit %d, want %d", sig, code, 128+int(sig))
		}
		entries, _ := os.ReadDir(out)
		if len(entries) != 0 {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("%v: output folder holds %v", sig, names)
		}
	}
}

const lab = "../../testdata/lab/"

// startUntil starts the binary and returns once its stderr has shown mark
// (the rest of stderr is collected in the returned buffer).
func startUntil(t *testing.T, mark string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var seen bytes.Buffer
	buf := make([]byte, 512)
	deadline := time.Now().Add(60 * time.Second)
	for !bytes.Contains(seen.Bytes(), []byte(mark)) && time.Now().Before(deadline) {
		n, err := stderr.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if !bytes.Contains(seen.Bytes(), []byte(mark)) {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("%v: never printed %q: %s", args, mark, seen.String())
	}
	go func() { // keep draining so the child never blocks
		for {
			n, err := stderr.Read(buf)
			seen.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	return cmd, &seen
}

// TestInterruptLeavesNothing: a signal at several points of a run (during
// fine-tuning, after a B' was staged; in the middle of eval --goodnet; a
// second Ctrl-C) exits 130/143 with the interrupted message and leaves no
// output folder, nor anything in a folder that existed.
func TestInterruptLeavesNothing(t *testing.T) {
	repairFT := []string{"repair", "--model", lab + "models/bd_net.h5", "--valid", lab + "data/cl/valid.h5", "--threshold", "2,4,10",
		"--finetune", "--ft-epochs", "50", "--ft-patience", "0"}
	evalGN := []string{"eval", "--goodnet", "--model", lab + "models/bd_net.h5", "--test", lab + "data/cl/valid.h5",
		"--repaired", lab + "models/pa_bd_net.h5", "--batch", "8"}
	for _, c := range []struct {
		name  string
		args  []string
		mark  string
		sigs  []syscall.Signal
		fresh bool // --out does not exist before the run
	}{
		{"fine-tuning, fresh folder", repairFT, "epoch 1:", []syscall.Signal{syscall.SIGINT}, true},
		{"fine-tuning, second Ctrl-C", repairFT, "epoch 1:", []syscall.Signal{syscall.SIGINT, syscall.SIGINT}, false},
		{"eval --goodnet", evalGN, "valid.h5", []syscall.Signal{syscall.SIGTERM}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			old := filepath.Join(out, "keep.txt")
			if !c.fresh {
				os.MkdirAll(out, 0o755)
				os.WriteFile(old, []byte("mine"), 0o644)
			}
			cmd, stderr := startUntil(t, c.mark, append(c.args, "--out", out)...)
			for _, s := range c.sigs {
				cmd.Process.Signal(s)
			}
			cmd.Wait()
			if code := cmd.ProcessState.ExitCode(); code != 128+int(c.sigs[0]) {
				t.Errorf("exit %d, want %d", code, 128+int(c.sigs[0]))
			}
			if !strings.Contains(stderr.String(), "left no output") {
				t.Errorf("no interrupted message: %q", stderr.String())
			}
			entries, err := os.ReadDir(out)
			switch {
			case c.fresh && err == nil:
				t.Errorf("left the output folder it created, holding %d entries", len(entries))
			case !c.fresh && (len(entries) != 1 || entries[0].Name() != "keep.txt"):
				t.Errorf("output folder holds %v", entries)
			}
			if !c.fresh {
				if b, _ := os.ReadFile(old); string(b) != "mine" {
					t.Error("an earlier file changed")
				}
			}
		})
	}
}

// TestOneRunPerFolder: a second run into a folder in use fails at once
// naming the folder and the other run's pid; the first run completes.
func TestOneRunPerFolder(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	first, _ := startUntil(t, "ranking", "repair", "--model", lab+"models/bd_net.h5", "--valid", lab+"data/cl/valid.h5",
		"--out", out, "--batch", "8", "--threshold", "4")
	_, stderr, code := execBadprune(t, "repair", "--model", tiny+"model_full.h5", "--valid", tiny+"clean_u8_nchw.h5", "--out", out, "-q")
	if err := first.Wait(); err != nil {
		t.Fatalf("first run: %v", err)
	}
	if code != exitError || !strings.Contains(stderr, out) || !strings.Contains(stderr, "in use by another badprune run (pid ") {
		t.Fatalf("second run: exit %d, %q", code, stderr)
	}
	entries, _ := os.ReadDir(out)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "prune_log.csv prune_log.json repaired_4.h5" {
		t.Errorf("output folder holds %v", names)
	}
}

// TestOutOfSpace: on a full filesystem repair fails with one line naming
// the folder and leaves it empty. Needs root to mount a tmpfs.
func TestOutOfSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	model := lab + "models/bd_net.h5"
	st, err := os.Stat(model)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		room int64 // bytes left free beside a file that was there before; 0: an empty 3 MB tmpfs
		want string
	}{
		// Known before writing: three B' of the model's size do not fit.
		{"up front", 0, "not enough space: the outputs need about"},
		// Found while writing: room for B' but not for B' and the logs.
		{"while writing", st.Size() + 8<<10, "no space left on device"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", dir).CombinedOutput(); err != nil {
				t.Skipf("mount: %v %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", dir).Run() })
			thresholds := "2,4,10"
			var before []byte
			if c.room > 0 {
				var fs syscall.Statfs_t
				syscall.Statfs(dir, &fs)
				before = make([]byte, int64(fs.Bavail)*fs.Bsize-c.room)
				if err := os.WriteFile(filepath.Join(dir, "earlier.bin"), before, 0o644); err != nil {
					t.Fatal(err)
				}
				thresholds = "4"
			}
			_, stderr, code := execBadprune(t, "repair", "--model", model, "--valid", lab+"data/cl/valid.h5",
				"--threshold", thresholds, "--out", dir, "-q")
			line := strings.TrimSpace(stderr)
			if code != exitError || strings.Contains(line, "\n") || !strings.Contains(line, dir+": ") || !strings.Contains(line, c.want) {
				t.Fatalf("exit %d, %q", code, stderr)
			}
			entries, _ := os.ReadDir(dir)
			if c.room == 0 && len(entries) != 0 || c.room > 0 && (len(entries) != 1 || entries[0].Name() != "earlier.bin") {
				t.Errorf("the filesystem holds %v", entries)
			}
			if c.room > 0 {
				if got, _ := os.ReadFile(filepath.Join(dir, "earlier.bin")); len(got) != len(before) {
					t.Error("the earlier file changed")
				}
			}
		})
	}
}

// TestEvalOutputs: eval --json writes no file unless --out is given; a
// failed eval --goodnet creates no folder and says how to make B' files.
func TestEvalOutputs(t *testing.T) {
	dir := t.TempDir()
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	os.Chdir(dir)
	abs := func(p string) string { return filepath.Join(wd, p) }
	rep := filepath.Join(dir, "rep")
	os.Mkdir(rep, 0o755)
	src, _ := os.ReadFile(abs(tiny + "model_full.h5"))
	os.WriteFile(filepath.Join(rep, "repaired_4.h5"), src, 0o644)
	args := []string{"eval", "--goodnet", "--json", "-q", "--model", abs(tiny + "model_full.h5"), "--test", abs(tiny + "clean_u8_nchw.h5"), "--repaired", rep}
	for i := 0; i < 2; i++ { // twice: a second CI build in the same workspace
		if _, stderr, code := badprune(t, args...); code != 0 {
			t.Fatalf("run %d: exit %d, %s", i, code, stderr)
		}
	}
	if _, err := os.Stat("out"); err == nil {
		t.Error("eval --json wrote out/ without --out")
	}
	if _, stderr, code := badprune(t, append(args, "--out", "given")...); code != 0 || !fileExists("given/eval.json") {
		t.Errorf("--json --out: exit %d, %s", code, stderr)
	}
	_, stderr, code := badprune(t, "eval", "--goodnet", "-q", "--model", abs(tiny+"model_full.h5"), "--test", abs(tiny+"clean_u8_nchw.h5"))
	if code != exitError || !strings.Contains(stderr, "out/") || !strings.Contains(stderr, "badprune repair") || !strings.Contains(stderr, "--repaired FILE") {
		t.Errorf("no repaired files: exit %d, %q", code, stderr)
	}
	if _, err := os.Stat("out"); err == nil {
		t.Error("a failed eval created out/")
	}
}

// TestPredictChannels: predict labels images of every colour model for
// RGB and grayscale models, and a wrong size is one clear line.
func TestPredictChannels(t *testing.T) {
	dir := t.TempDir()
	models := map[int]string{3: tiny + "model_full.h5"}
	gray, err := fixture.TinyDeepIDChannels(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	models[1] = filepath.Join(dir, "gray.h5")
	if err := gray.Create(models[1], model.FullModelFile, true); err != nil {
		t.Fatal(err)
	}
	imgs := map[string]image.Image{}
	r := image.Rect(0, 0, 47, 55)
	g, g16, rgba, nrgba := image.NewGray(r), image.NewGray16(r), image.NewRGBA(r), image.NewNRGBA(r)
	pal := image.NewPaletted(r, color.Palette{color.Black, color.White, color.NRGBA{200, 10, 10, 128}})
	for y := 0; y < 55; y++ {
		for x := 0; x < 47; x++ {
			v := uint8(x*5 + y)
			g.SetGray(x, y, color.Gray{v})
			g16.SetGray16(x, y, color.Gray16{uint16(v) << 8})
			rgba.SetRGBA(x, y, color.RGBA{v, 255 - v, v / 2, 255})
			nrgba.SetNRGBA(x, y, color.NRGBA{v, v, 255 - v, v})
			pal.SetColorIndex(x, y, uint8((x+y)%3))
		}
	}
	imgs["gray.png"], imgs["gray16.png"], imgs["rgba.png"], imgs["nrgba.png"], imgs["paletted.png"] = g, g16, rgba, nrgba, pal
	var files []string
	for name, im := range imgs {
		var b bytes.Buffer
		png.Encode(&b, im)
		files = append(files, filepath.Join(dir, name))
		os.WriteFile(files[len(files)-1], b.Bytes(), 0o644)
	}
	for name, im := range map[string]image.Image{"ycbcr.jpg": rgba, "gray.jpg": g} {
		var b bytes.Buffer
		jpeg.Encode(&b, im, nil)
		files = append(files, filepath.Join(dir, name))
		os.WriteFile(files[len(files)-1], b.Bytes(), 0o644)
	}
	small := filepath.Join(dir, "small.png")
	var b bytes.Buffer
	png.Encode(&b, image.NewGray(image.Rect(0, 0, 28, 28)))
	os.WriteFile(small, b.Bytes(), 0o644)
	for ch, m := range models {
		for _, f := range files {
			stdout, stderr, code := badprune(t, "predict", "--model", m, f)
			if code != 0 || !strings.HasPrefix(stdout, f+"\t") || strings.Count(stdout, "\n") != 1 {
				t.Errorf("%d-channel model, %s: exit %d, %q %q", ch, filepath.Base(f), code, stdout, stderr)
			}
		}
		_, stderr, code := badprune(t, "predict", "--model", m, small)
		if line := strings.TrimSpace(stderr); code != exitError || strings.Contains(line, "\n") || !strings.Contains(line, "28x28") || !strings.Contains(line, "47x55") {
			t.Errorf("%d-channel model, wrong size: exit %d, %q", ch, code, stderr)
		}
	}
}

// TestKilledChildLeavesNothing: when the working child dies without a
// chance to clean up (SIGKILL, as the OOM killer sends), the supervisor
// removes what it staged, including the output folder it created.
func TestKilledChildLeavesNothing(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	cmd, stderr := startUntil(t, "epoch 1:", "repair", "--model", lab+"models/bd_net.h5", "--valid", lab+"data/cl/valid.h5",
		"--threshold", "2,4", "--finetune", "--ft-epochs", "50", "--ft-patience", "0", "--out", out)
	// The supervisor started the child from whichever thread ran it.
	var kids []byte
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", cmd.Process.Pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		kids = append(kids, b...)
	}
	child, convErr := strconv.Atoi(strings.TrimSpace(string(kids)))
	if err != nil || convErr != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Skipf("cannot find the child process: %v %v", err, convErr)
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatalf("nothing staged yet: %v", err)
	}
	syscall.Kill(child, syscall.SIGKILL)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 128+int(syscall.SIGKILL) || !strings.Contains(stderr.String(), "killed") {
		t.Errorf("exit %d, %q", code, stderr.String())
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("the killed run left its output folder")
	}
}

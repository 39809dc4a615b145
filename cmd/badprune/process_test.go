package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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

// TestLibraryFault: a file on which the HDF5 C library faults (found by
// fuzzing) ends in one line naming it and exit 1, not a crash dump.
func TestLibraryFault(t *testing.T) {
	bad := "../../testdata/crash/hdf5_fault.h5"
	// The output folder is created and eval.json staged before the sets
	// are read: the supervisor must remove both.
	out := filepath.Join(t.TempDir(), "out")
	_, stderr, code := execBadprune(t, "eval", "--goodnet", "--model", tiny+"model_full.h5", "--test", bad,
		"--repaired", tiny+"model_weights.h5", "--out", out, "-q")
	if code != exitError || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, bad) || !strings.Contains(stderr, "HDF5 library crashed") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("the crashed run left its output folder %s", out)
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

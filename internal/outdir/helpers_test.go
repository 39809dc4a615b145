package outdir

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"badprune/internal/guard"
)

// Environment of a helper process: the test binary run again to act as
// another badprune run, see TestMain.
const (
	envHelper = "OUTDIR_TEST_HELPER" // which helper to be
	envDir    = "OUTDIR_TEST_DIR"    // the output folder
)

// past is the modification time given to files that exist before a run,
// so that a rewrite in the same second still shows.
var past = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)

func TestMain(m *testing.M) {
	if h := os.Getenv(envHelper); h != "" {
		helper(h, os.Getenv(envDir))
		return
	}
	os.Exit(m.Run())
}

// helper is another process using outdir on dir: it ends by crashing
// (SIGKILL: no deferred call runs) or exits 0; on an unexpected error it
// exits 3. Lines on stdout tell the parent how it went.
func helper(name, dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	crash := func() {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	stage := func(r *Run, names ...string) {
		for _, n := range names {
			if err := os.WriteFile(r.Path(n), []byte("new "+n), 0o644); err != nil {
				fail(err)
			}
		}
	}
	stdinEOF := func() { io.Copy(io.Discard, os.Stdin) }
	switch name {
	case "hold": // take the folder, then crash when told
		r, err := Begin(dir, []string{"x"}, Options{})
		if err != nil {
			fail(err)
		}
		stage(r, "x")
		fmt.Println("ready")
		stdinEOF()
		crash()
	case "race": // Begin at the given time; the winner holds until told
		at, _ := time.Parse(time.RFC3339Nano, os.Getenv("OUTDIR_TEST_AT"))
		time.Sleep(time.Until(at))
		r, err := Begin(dir, []string{"x"}, Options{})
		if e, ok := err.(*InUseError); ok {
			fmt.Println("inuse", e.PID)
			return
		}
		if err != nil {
			fail(err)
		}
		fmt.Println("won")
		stdinEOF()
		stage(r, "x")
		if _, err := r.Commit(); err != nil {
			fail(err)
		}
	case "staged": // crash with outputs staged
		r, err := Begin(dir, []string{"x", "y", "z"}, Options{Force: true})
		if err != nil {
			fail(err)
		}
		stage(r, "x", "y")
		crash()
	case "commit-forced", "commit": // crash after publishing the second output
		r, err := Begin(dir, []string{"x", "y", "z"}, Options{Force: name == "commit-forced"})
		if err != nil {
			fail(err)
		}
		stage(r, "x", "y", "z")
		r.published = func(n string) {
			if n == "y" {
				crash()
			}
		}
		r.Commit()
		fail(fmt.Errorf("Commit returned"))
	case "committed": // crash right after a commit
		r, err := Begin(dir, []string{"x", "y", "z"}, Options{Force: true})
		if err != nil {
			fail(err)
		}
		stage(r, "x", "y")
		if _, err := r.Commit(); err != nil {
			fail(err)
		}
		crash()
	default:
		fail(fmt.Errorf("no helper %q", name))
	}
}

// startHelper starts helper name on dir. With watch, its guard reports go
// to the returned Watcher.
func startHelper(t *testing.T, name, dir string, watch bool, env ...string) (*exec.Cmd, *guard.Watcher, io.WriteCloser, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHelper+"="+name, envDir+"="+dir)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var w *guard.Watcher
	var pw *os.File
	if watch {
		var pr *os.File
		pr, pw, err = os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pr.Close() })
		cmd.ExtraFiles = []*os.File{pw}
		cmd.Env = append(cmd.Env, guard.EnvFD+"=3")
		w = guard.Watch(pr)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if pw != nil {
		pw.Close() // the child holds the only writer: the reports end with it
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, w, in, bufio.NewReader(out)
}

// killedBy checks that cmd ended by signal sig.
func killedBy(t *testing.T, cmd *exec.Cmd, sig syscall.Signal) {
	t.Helper()
	err := cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != sig {
		t.Fatalf("helper ended with %v, want signal %v", err, sig)
	}
}

// entry is what a snapshot keeps of one file or folder.
type entry struct {
	dir   bool
	mode  fs.FileMode
	data  string
	mtime time.Time
}

func (e entry) String() string {
	if e.dir {
		return "folder"
	}
	return fmt.Sprintf("%v %q %v", e.mode, e.data, e.mtime.Format(time.RFC3339Nano))
}

// snapshot records everything under root; a missing root is empty.
func snapshot(t *testing.T, root string) map[string]entry {
	t.Helper()
	s := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root && os.IsNotExist(err) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			s[rel] = entry{dir: true}
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			to, err := os.Readlink(p)
			s[rel] = entry{mode: fi.Mode(), data: "-> " + to, mtime: fi.ModTime()}
			return err
		}
		b, err := os.ReadFile(p)
		s[rel] = entry{mode: fi.Mode(), data: string(b), mtime: fi.ModTime()}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// visible drops the package's own files from snapshot s.
func visible(s map[string]entry) map[string]entry {
	for k := range s {
		if strings.Contains(k, reserved) {
			delete(s, k)
		}
	}
	return s
}

// diff describes how snapshot got differs from want, or is "".
func diff(got, want map[string]entry) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[k]
		switch {
		case !ok:
			fmt.Fprintf(&b, "\n  missing %s (%v)", k, want[k])
		case g.dir != want[k].dir || g.mode != want[k].mode || g.data != want[k].data || !g.mtime.Equal(want[k].mtime):
			fmt.Fprintf(&b, "\n  changed %s: %v, want %v", k, g, want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			fmt.Fprintf(&b, "\n  extra %s (%v)", k, got[k])
		}
	}
	return b.String()
}

// same fails t when root does not look as in want.
func same(t *testing.T, root string, want map[string]entry, when string) {
	t.Helper()
	if d := diff(snapshot(t, root), want); d != "" {
		t.Errorf("%s, %s differs:%s", when, root, d)
	}
}

// populate writes files (path relative to root → content; a name ending in
// / is a folder) dated in the past.
func populate(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(files)) {
		p := filepath.Join(root, k)
		if strings.HasSuffix(k, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(files[k]), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, past, past); err != nil {
			t.Fatal(err)
		}
	}
}

// stage writes each output's staged file.
func stage(t *testing.T, r *Run, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := os.WriteFile(r.Path(n), []byte("new "+n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// hidden lists the package's own files left in dir.
func hidden(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var got []string
	for _, de := range des {
		if strings.HasPrefix(de.Name(), reserved) {
			got = append(got, de.Name())
		}
	}
	return got
}

package outdir

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"badprune/internal/guard"
)

// TestCommit checks that Commit publishes exactly the staged outputs, in
// Begin's order, leaves the folder's other files as they were, and leaves
// nothing of its own.
func TestCommit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		dir    string            // relative to a fresh temporary folder
		pre    map[string]string // files there before, relative to it
		force  bool
		names  []string
		staged []string
	}{
		{name: "new folder", dir: "out", names: []string{"a", "b"}, staged: []string{"a", "b"}},
		{name: "new parents", dir: "p/q/out", names: []string{"a"}, staged: []string{"a"}},
		{name: "some staged", dir: "out", names: []string{"a", "b", "c"}, staged: []string{"c", "a"}},
		{name: "none staged", dir: "out", names: []string{"a"}},
		{name: "no outputs", dir: "out"},
		{name: "other files kept", dir: "out", pre: map[string]string{"out/user": "u", "out/sub/f": "f", "out/.hidden": "h"},
			names: []string{"a", "b"}, staged: []string{"b"}},
		{name: "force replaces", dir: "out", pre: map[string]string{"out/a": "old a", "out/b": "old b", "out/user": "u"}, force: true,
			names: []string{"a", "b", "c"}, staged: []string{"a", "c"}},
		{name: "current folder", dir: ".", pre: map[string]string{"user": "u"}, names: []string{"a"}, staged: []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, dir, before := prepare(t, tc.pre, tc.dir)

			r, err := Begin(dir, tc.names, Options{Force: tc.force})
			if err != nil {
				t.Fatal(err)
			}
			if r.Dir() != dir {
				t.Errorf("Dir() = %q, want %q", r.Dir(), dir)
			}
			stage(t, r, tc.staged...)
			// Before Commit nothing is published: the folder holds what it
			// held plus the run's hidden files.
			mid := snapshot(t, root)
			for k, e := range before {
				if e.dir {
					continue
				}
				if d := diff(map[string]entry{k: mid[k]}, map[string]entry{k: e}); d != "" {
					t.Errorf("before Commit:%s", d)
				}
			}
			for _, n := range tc.staged {
				if b, _ := os.ReadFile(r.Final(n)); strings.HasPrefix(string(b), "new") {
					t.Errorf("%s published before Commit", n)
				}
			}

			got, err := r.Commit()
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, n := range tc.names {
				if slices.Contains(tc.staged, n) {
					want = append(want, filepath.Join(dir, n))
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("Commit() = %q, want %q", got, want)
			}
			wantTree := maps.Clone(before)
			for p := filepath.Dir(filepath.Join(tc.dir, "x")); p != "."; p = filepath.Dir(p) {
				wantTree[p] = entry{dir: true}
			}
			for _, n := range tc.staged {
				k := filepath.Join(tc.dir, n)
				fi, err := os.Stat(filepath.Join(root, k))
				if err != nil {
					t.Fatal(err)
				}
				wantTree[k] = entry{mode: 0o644, data: "new " + n, mtime: fi.ModTime()}
			}
			same(t, root, wantTree, "after Commit")
			r.Abort() // after Commit: nothing
			same(t, root, wantTree, "after Commit and Abort")
			if _, err := r.Commit(); err == nil {
				t.Error("second Commit succeeded")
			}
		})
	}
}

// TestCrash runs a helper process that uses outdir with its guard reports
// piped to a Watcher, as badprune's supervisor does, and crashes at some
// point (SIGKILL: no deferred Abort runs). The Watcher's Cleanup must then
// leave the folder as it was before the run, or, after a commit, with just
// the new outputs.
func TestCrash(t *testing.T) {
	for _, tc := range []struct {
		helper    string
		dir       string            // relative to a fresh temporary folder
		pre       map[string]string // files there before
		committed map[string]string // outputs published by a commit
	}{
		{helper: "staged", dir: "p/q/out"},
		{helper: "staged", dir: "out", pre: map[string]string{"out/user": "u", "out/x": "old x", "out/y": "old y"}},
		{helper: "commit", dir: "p/out"},
		{helper: "commit", dir: "out", pre: map[string]string{"out/user": "u", "out/w/": ""}},
		{helper: "commit-forced", dir: "out", pre: map[string]string{"out/user": "u", "out/x": "old x", "out/y": "old y"}},
		{helper: "commit-forced", dir: "out", pre: map[string]string{"out/y": "old y"}},
		{helper: "committed", dir: "p/out", committed: map[string]string{"x": "new x", "y": "new y"}},
		{helper: "committed", dir: "out", pre: map[string]string{"out/user": "u", "out/x": "old x", "out/z": "old z"},
			committed: map[string]string{"x": "new x", "y": "new y"}},
	} {
		t.Run(tc.helper+"/"+tc.dir, func(t *testing.T) {
			root, dir, want := prepare(t, tc.pre, tc.dir)

			cmd, w, _, _ := startHelper(t, tc.helper, dir, true)
			killedBy(t, cmd, syscall.SIGKILL)
			w.Wait()
			if tc.committed == nil && diff(snapshot(t, root), want) == "" {
				t.Fatal("the crash left nothing to clean up: the test tests nothing")
			}
			if err := w.Cleanup(); err != nil {
				t.Errorf("Cleanup: %v", err)
			}

			for n, v := range tc.committed {
				k := filepath.Join(tc.dir, n)
				fi, err := os.Stat(filepath.Join(root, k))
				if err != nil {
					t.Fatal(err)
				}
				want[k] = entry{mode: 0o644, data: v, mtime: fi.ModTime()}
				for p := filepath.Dir(k); p != "."; p = filepath.Dir(p) {
					want[p] = entry{dir: true}
				}
			}
			same(t, root, want, "after the crash and Cleanup")
			if tc.committed != nil {
				if h := hidden(t, dir); len(h) != 0 {
					t.Errorf("left %q", strings.Join(h, " "))
				}
			}
		})
	}
}

// TestAbort checks that Abort leaves the folder as it was before Begin:
// folders Begin created are gone, the rest untouched.
func TestAbort(t *testing.T) {
	for _, tc := range []struct {
		name  string
		dir   string
		pre   map[string]string
		force bool
		keep  string // a file put in dir during the run by someone else
	}{
		{name: "new folder", dir: "out"},
		{name: "new parents", dir: "p/q/out"},
		{name: "existing parent", dir: "p/out", pre: map[string]string{"p/user": "u"}},
		{name: "existing folder", dir: "out", pre: map[string]string{"out/user": "u", "out/sub/f": "f", "out/empty/": ""}},
		{name: "old outputs", dir: "out", pre: map[string]string{"out/a": "old a", "out/user": "u"}, force: true},
		{name: "someone else's file", dir: "p/out", keep: "theirs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, dir, want := prepare(t, tc.pre, tc.dir)
			r, err := Begin(dir, []string{"a", "b", "c"}, Options{Force: tc.force})
			if err != nil {
				t.Fatal(err)
			}
			stage(t, r, "a", "b")
			if tc.keep != "" {
				// The folder Begin created is no longer empty: it stays.
				populate(t, root, map[string]string{filepath.Join(tc.dir, tc.keep): "x"})
				want = visible(snapshot(t, root))
			}
			r.Abort()
			r.Abort()
			same(t, root, want, "after Abort")
			if _, err := r.Commit(); err == nil {
				t.Error("Commit after Abort succeeded")
			}
		})
	}
}

// TestExistsAtBegin checks that Begin refuses an existing output without
// Force, and a folder in an output's place even with it, creating nothing.
func TestExistsAtBegin(t *testing.T) {
	root := t.TempDir()
	populate(t, root, map[string]string{"out/b": "old b", "out/user": "u", "out/d/f": "f"})
	before := snapshot(t, root)
	dir := filepath.Join(root, "out")

	_, err := Begin(dir, []string{"a", "b", "c"}, Options{})
	var ee *ExistsError
	if !errors.As(err, &ee) || ee.Path != filepath.Join(dir, "b") {
		t.Fatalf("Begin: %v, want *ExistsError for %s", err, filepath.Join(dir, "b"))
	}
	if want := filepath.Join(dir, "b") + ": already exists"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	same(t, root, before, "after Begin")

	_, err = Begin(dir, []string{"a", "d"}, Options{Force: true})
	if want := filepath.Join(dir, "d") + ": is a directory"; err == nil || err.Error() != want {
		t.Errorf("forced Begin over a folder: %v, want %q", err, want)
	}
	same(t, root, before, "after forced Begin")
}

// TestExistsAtCommit checks that an output appearing during the run, after
// Begin's check, stops Commit: nothing is published and the new file is
// left alone. "late" makes it appear during Commit, after the first output
// was published, which Commit then takes back.
func TestExistsAtCommit(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(fmt.Sprint("late=", late), func(t *testing.T) {
			root := t.TempDir()
			populate(t, root, map[string]string{"out/user": "u"})
			dir := filepath.Join(root, "out")
			before := snapshot(t, root)

			r, err := Begin(dir, []string{"a", "b"}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Abort()
			stage(t, r, "a", "b")
			appear := func() {
				populate(t, root, map[string]string{"out/b": "theirs"})
			}
			published := false
			if late {
				r.published = func(n string) {
					if n == "a" {
						b, _ := os.ReadFile(r.Final("a"))
						published = string(b) == "new a"
						appear()
					}
				}
			} else {
				appear()
			}
			got, err := r.Commit()
			var ee *ExistsError
			if !errors.As(err, &ee) || ee.Path != filepath.Join(dir, "b") {
				t.Fatalf("Commit() = %q, %v, want *ExistsError for b", got, err)
			}
			if late && !published {
				t.Error("a was not published before b appeared: nothing to take back")
			}
			want := maps.Clone(before)
			want["out/b"] = entry{mode: 0o644, data: "theirs", mtime: past}
			same(t, root, want, "after Commit")
		})
	}
}

// TestForceRollback checks that with Force an old output is replaced only
// at Commit, and put back when publishing a later output fails: here the
// final path of b turned into a folder during the run.
func TestForceRollback(t *testing.T) {
	root := t.TempDir()
	populate(t, root, map[string]string{"out/a": "old a", "out/c": "old c", "out/user": "u"})
	dir := filepath.Join(root, "out")
	r, err := Begin(dir, []string{"a", "b", "c"}, Options{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Abort()
	stage(t, r, "a", "b", "c")
	populate(t, root, map[string]string{"out/b/inner": "theirs"})
	before := visible(snapshot(t, root))

	var seen []string // the final files as each output was published
	r.published = func(n string) {
		b, _ := os.ReadFile(r.Final(n))
		seen = append(seen, n+"="+string(b))
	}
	got, err := r.Commit()
	if err == nil {
		t.Fatalf("Commit() = %q, want an error", got)
	}
	if want := filepath.Join(dir, "b") + ": is a directory"; err.Error() != want {
		t.Errorf("Commit: %q, want %q", err, want)
	}
	if want := []string{"a=new a"}; !slices.Equal(seen, want) {
		t.Errorf("published %q before failing, want %q", seen, want)
	}
	same(t, root, before, "after a failed Commit")
}

// TestInUse checks that a second run on a folder is refused, naming the
// first run's process, without disturbing it.
func TestInUse(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "out")
	r, err := Begin(dir, []string{"a"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	stage(t, r, "a")
	during := snapshot(t, root)

	_, err = Begin(dir, []string{"b"}, Options{})
	var ue *InUseError
	if !errors.As(err, &ue) || ue.Dir != dir || ue.PID != os.Getpid() {
		t.Fatalf("second Begin: %v, want *InUseError for %s, pid %d", err, dir, os.Getpid())
	}
	if want := fmt.Sprintf("%s: in use by another badprune run (pid %d)", dir, os.Getpid()); err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	same(t, root, during, "after the refused Begin")

	if _, err := r.Commit(); err != nil {
		t.Fatal(err)
	}
	r2, err := Begin(dir, []string{"b"}, Options{})
	if err != nil {
		t.Fatalf("Begin after the first run ended: %v", err)
	}
	r2.Abort()
}

// TestInUseOtherProcess checks the lock between processes: refused while
// the other run lives, taken over once it died without cleaning up.
func TestInUseOtherProcess(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "out")
	cmd, _, in, out := startHelper(t, "hold", dir, false)
	if line, err := out.ReadString('\n'); line != "ready\n" {
		t.Fatalf("helper: %q, %v", line, err)
	}

	_, err := Begin(dir, []string{"x"}, Options{})
	var ue *InUseError
	if !errors.As(err, &ue) || ue.PID != cmd.Process.Pid {
		t.Fatalf("Begin: %v, want *InUseError naming pid %d", err, cmd.Process.Pid)
	}

	in.Close() // the helper crashes, leaving its lock and staging folder
	killedBy(t, cmd, syscall.SIGKILL)
	if h := hidden(t, dir); len(h) != 2 {
		t.Fatalf("the crashed helper left %q, want a lock and a staging folder", h)
	}
	r, err := Begin(dir, []string{"x"}, Options{})
	if err != nil {
		t.Fatalf("Begin after the holder died: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, lockName))
	if want := strconv.Itoa(os.Getpid()) + "\n"; string(b) != want {
		t.Errorf("lock holds %q, want %q", b, want)
	}
	if h := hidden(t, dir); len(h) != 2 || !slices.Contains(h, filepath.Base(r.staging)) {
		t.Errorf("after taking over: %q, want the lock and this run's staging folder", h)
	}
	r.Abort()
	if h := hidden(t, dir); len(h) != 0 {
		t.Errorf("after Abort: %q left", h)
	}
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "0")
	if err := cmd.Run(); err != nil {
		t.Skip("cannot run sleep:", err)
	}
	return cmd.Process.Pid
}

// TestStaleLock checks what Begin makes of a lock it finds.
func TestStaleLock(t *testing.T) {
	dead := deadPID(t)
	staging := fmt.Sprintf("%s%d-0badf00d", stagingPfx, dead)
	for _, tc := range []struct {
		name  string
		lock  string
		age   time.Duration
		pid   int // of the *InUseError, or -1 for none
		extra map[string]string
		after map[string]string // the files Begin leaves, but its own
	}{
		{
			name: "dead pid",
			lock: fmt.Sprintln(dead),
			pid:  -1,
			extra: map[string]string{
				staging + "/a":                     "staged a",
				staging + "/" + oldName + "/b":     "old b, aside, replaced by new b",
				staging + "/" + oldName + "/c":     "old c, aside, not yet replaced",
				".badprune-staging-1-0123abcd/a":   "another run's",
				fmt.Sprintf("%s%d", stagingPfx, 1): "not a staging folder",
				"b":                                "new b",
			},
			after: map[string]string{
				"c":                                "old c, aside, not yet replaced",
				".badprune-staging-1-0123abcd/a":   "another run's",
				fmt.Sprintf("%s%d", stagingPfx, 1): "not a staging folder",
				"b":                                "new b",
			},
		},
		{name: "dead pid, no newline", lock: strconv.Itoa(dead), pid: -1},
		{name: "live pid", lock: "1\n", pid: 1},
		{name: "own pid", lock: fmt.Sprintln(os.Getpid()), pid: os.Getpid()},
		{name: "old garbage", lock: "garbage", age: time.Hour, pid: -1},
		{name: "old empty", lock: "", age: time.Hour, pid: -1},
		{name: "fresh garbage", lock: "garbage", pid: 0},
		{name: "fresh empty", lock: "", pid: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			populate(t, dir, tc.extra)
			lock := filepath.Join(dir, lockName)
			if err := os.WriteFile(lock, []byte(tc.lock), 0o644); err != nil {
				t.Fatal(err)
			}
			mt := time.Now().Add(-tc.age)
			if err := os.Chtimes(lock, mt, mt); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, dir)

			r, err := Begin(dir, []string{"a"}, Options{})
			if tc.pid >= 0 {
				var ue *InUseError
				if !errors.As(err, &ue) || ue.PID != tc.pid {
					t.Fatalf("Begin: %v, want *InUseError with pid %d", err, tc.pid)
				}
				same(t, dir, before, "after the refused Begin")
				return
			}
			if err != nil {
				t.Fatalf("Begin: %v", err)
			}
			r.Abort()
			want := map[string]entry{}
			for k, v := range tc.after {
				want[k] = entry{mode: 0o644, data: v, mtime: past}
				for p := filepath.Dir(k); p != "."; p = filepath.Dir(p) {
					want[p] = entry{dir: true}
				}
			}
			same(t, dir, want, "after Begin and Abort")
		})
	}
}

// TestConcurrentBegin starts many runs at once on one new folder: exactly
// one wins, and the others take nothing of its away.
func TestConcurrentBegin(t *testing.T) {
	const n = 32
	root := t.TempDir()
	dir := filepath.Join(root, "p", "q", "out")
	start := make(chan struct{})
	runs := make([]*Run, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			runs[i], errs[i] = Begin(dir, []string{"a"}, Options{})
		}()
	}
	close(start)
	wg.Wait()

	var win *Run
	for i, err := range errs {
		var ue *InUseError
		switch {
		case err == nil && win == nil:
			win = runs[i]
		case err == nil:
			t.Errorf("run %d won too", i)
			runs[i].Abort()
		case !errors.As(err, &ue) || ue.PID != os.Getpid():
			t.Errorf("run %d: %v, want *InUseError with pid %d", i, err, os.Getpid())
		}
	}
	if win == nil {
		t.Fatal("no run won")
	}
	stage(t, win, "a")
	if _, err := win.Commit(); err != nil {
		t.Fatal(err)
	}
	published(t, dir, "a", "new a")
}

// TestConcurrentProcesses is TestConcurrentBegin across processes.
func TestConcurrentProcesses(t *testing.T) {
	const n = 6
	root := t.TempDir()
	dir := filepath.Join(root, "p", "out")
	at := "OUTDIR_TEST_AT=" + time.Now().Add(500*time.Millisecond).Format(time.RFC3339Nano)
	type result struct {
		pid  int
		line string
		err  error
	}
	results := make(chan result, n)
	cmds := map[int]*exec.Cmd{}
	var stdins []io.WriteCloser
	for range n {
		cmd, _, in, out := startHelper(t, "race", dir, false, at)
		cmds[cmd.Process.Pid] = cmd
		stdins = append(stdins, in)
		go func() {
			l, err := out.ReadString('\n')
			results <- result{cmd.Process.Pid, l, err}
		}()
	}
	var wins []int
	refused := map[int]int{} // helper → the pid it was refused for
	for range n {
		r := <-results
		f := strings.Fields(r.line)
		switch {
		case r.err != nil:
			t.Fatalf("helper %d: %q, %v", r.pid, r.line, r.err)
		case len(f) == 1 && f[0] == "won":
			wins = append(wins, r.pid)
		case len(f) == 2 && f[0] == "inuse":
			refused[r.pid], _ = strconv.Atoi(f[1])
		default:
			t.Fatalf("helper %d: %q", r.pid, r.line)
		}
	}
	if len(wins) != 1 {
		t.Fatalf("winners: %v, want one", wins)
	}
	for h, p := range refused {
		if p != wins[0] {
			t.Errorf("helper %d was refused naming pid %d, want the winner %d", h, p, wins[0])
		}
	}
	for _, in := range stdins {
		in.Close() // the winner commits
	}
	if err := cmds[wins[0]].Wait(); err != nil {
		t.Fatalf("winner: %v", err)
	}
	published(t, dir, "x", "new x")
}

// TestBeginErrors checks Begin's refusals: each leaves nothing behind and
// names a path once.
func TestBeginErrors(t *testing.T) {
	root := t.TempDir()
	populate(t, root, map[string]string{"file": "f"})
	before := snapshot(t, root)
	file := filepath.Join(root, "file")
	for _, tc := range []struct {
		name  string
		dir   string
		names []string
		want  string
	}{
		{"folder is a file", file, []string{"a"}, file + ": not a directory"},
		{"parent is a file", filepath.Join(file, "out"), []string{"a"}, file + ": not a directory"},
		{"grandparent is a file", filepath.Join(file, "p", "out"), []string{"a"}, file + ": not a directory"},
		{"path in name", filepath.Join(root, "out"), []string{"a/b"}, `outdir: "a/b" is not a valid output name`},
		{"empty name", filepath.Join(root, "out"), []string{""}, `outdir: "" is not a valid output name`},
		{"dot dot", filepath.Join(root, "out"), []string{".."}, `outdir: ".." is not a valid output name`},
		{"reserved name", filepath.Join(root, "out"), []string{lockName}, `outdir: ".badprune.lock" is not a valid output name`},
		{"twice", filepath.Join(root, "out"), []string{"a", "b", "a"}, `outdir: output "a" named twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Begin(tc.dir, tc.names, Options{})
			if err == nil {
				r.Abort()
				t.Fatal("Begin succeeded")
			}
			if err.Error() != tc.want {
				t.Errorf("Begin: %q, want %q", err, tc.want)
			}
			same(t, root, before, "after Begin")
		})
	}
}

// TestInputs checks that an output may not replace one of the run's
// inputs, whatever its spelling and even with Force.
func TestInputs(t *testing.T) {
	root := t.TempDir()
	populate(t, root, map[string]string{"in/m.h5": "model", "in/v.h5": "data", "out/old.h5": "old"})
	in := filepath.Join(root, "in")
	out := filepath.Join(root, "out")
	if err := os.Link(filepath.Join(in, "v.h5"), filepath.Join(out, "linked.h5")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(in, "m.h5"), filepath.Join(out, "sym.h5")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(in, filepath.Join(root, "alias")); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, root)
	m, v := filepath.Join(in, "m.h5"), filepath.Join(in, "v.h5")
	for _, tc := range []struct {
		name   string
		dir    string
		names  []string
		inputs []string
		want   string // the error, or "" for none
	}{
		{"same path", in, []string{"x.h5", "m.h5"}, []string{v, m}, m + ": output would overwrite the input " + m},
		{"cleaned spelling", in, []string{"v.h5"}, []string{root + "/out/../in//v.h5"}, v + ": output would overwrite the input " + root + "/out/../in//v.h5"},
		{"other spelling", in, []string{"v.h5"}, []string{filepath.Join(root, "alias", "v.h5")}, v + ": output would overwrite the input " + filepath.Join(root, "alias", "v.h5")},
		{"hard link", out, []string{"linked.h5"}, []string{m, v}, filepath.Join(out, "linked.h5") + ": output would overwrite the input " + v},
		{"symbolic link", out, []string{"sym.h5"}, []string{m}, filepath.Join(out, "sym.h5") + ": output would overwrite the input " + m},
		{"unrelated", out, []string{"old.h5", "new.h5"}, []string{m, v, "", filepath.Join(root, "missing")}, ""},
		{"no inputs", out, []string{"old.h5"}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Begin(tc.dir, tc.names, Options{Force: true, Inputs: tc.inputs})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				r.Abort()
			} else {
				var ie *InputError
				if !errors.As(err, &ie) || err.Error() != tc.want {
					t.Fatalf("Begin: %v, want *InputError %q", err, tc.want)
				}
			}
			same(t, root, before, "after Begin")
		})
	}
}

// TestPathPanics checks that asking for an output Begin was not told of is
// caught.
func TestPathPanics(t *testing.T) {
	r, err := Begin(t.TempDir(), []string{"a"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Abort()
	if got, want := r.Path("a"), filepath.Join(r.staging, "a"); got != want {
		t.Errorf("Path(a) = %q, want %q", got, want)
	}
	defer func() {
		if recover() == nil {
			t.Error("Path(b) did not panic")
		}
	}()
	r.Path("b")
}

// TestErrors checks the errors' messages and IsNoSpace.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&ExistsError{Path: "out/a.h5"}, "out/a.h5: already exists"},
		{&InUseError{Dir: "out", PID: 42}, "out: in use by another badprune run (pid 42)"},
		{&InUseError{Dir: "out"}, "out: in use by another badprune run"},
		{&NoSpaceError{Dir: "out", Need: 3<<20 + 1, Free: 2<<20 - 1}, "out: not enough space: the outputs need about 4 MB, 1 MB free"},
		{&NoSpaceError{Dir: "out"}, "out: no space left on device"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%#v: %q, want %q", tc.err, got, tc.want)
		}
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&NoSpaceError{Dir: "out"}, true},
		{fmt.Errorf("writing: %w", &NoSpaceError{Dir: "out", Need: 1}), true},
		{&fs.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}, true},
		{fmt.Errorf("x: %w", syscall.ENOSPC), true},
		{&fs.PathError{Op: "write", Path: "x", Err: syscall.EIO}, false},
		{&ExistsError{Path: "x"}, false},
		{nil, false},
	} {
		if got := IsNoSpace(tc.err); got != tc.want {
			t.Errorf("IsNoSpace(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if !errors.Is(&NoSpaceError{}, syscall.ENOSPC) {
		t.Error("a *NoSpaceError is not ENOSPC")
	}
}

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

// prepare makes a fresh temporary folder holding the files pre and
// returns it, the folder rel inside it, and its snapshot.
func prepare(t *testing.T, pre map[string]string, rel string) (root, dir string, before map[string]entry) {
	t.Helper()
	root = t.TempDir()
	populate(t, root, pre)
	return root, filepath.Join(root, rel), snapshot(t, root)
}

// published checks that dir holds name with the contents want, and none
// of the package's own files.
func published(t *testing.T, dir, name, want string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if string(b) != want {
		t.Errorf("published %s: %q, %v", name, b, err)
	}
	if h := hidden(t, dir); len(h) != 0 {
		t.Errorf("left %q", h)
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

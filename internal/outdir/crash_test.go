package outdir

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

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
			root := t.TempDir()
			populate(t, root, tc.pre)
			want := snapshot(t, root)
			dir := filepath.Join(root, tc.dir)

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

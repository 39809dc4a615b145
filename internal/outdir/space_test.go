package outdir

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestNeed checks the early check of free space on the real filesystem:
// no disk has an exabyte free.
func TestNeed(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "p", "out") // missing: the check looks above
	const need = 1 << 60
	_, err := Begin(dir, []string{"a"}, Options{Need: need})
	var ns *NoSpaceError
	if !errors.As(err, &ns) || ns.Dir != dir || ns.Need != need || ns.Free <= 0 || ns.Free >= need {
		t.Fatalf("Begin: %#v, want a *NoSpaceError for %s needing %d", err, dir, need)
	}
	same(t, root, map[string]entry{}, "after Begin")

	r, err := Begin(dir, []string{"a"}, Options{Need: 1})
	if err != nil {
		t.Fatalf("Begin needing 1 byte: %v", err)
	}
	r.Abort()
	same(t, root, map[string]entry{}, "after Abort")
}

// tmpfs mounts a 1 MiB tmpfs for the test, or skips it.
func tmpfs(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

// TestNoSpace runs out of space on a small filesystem.
func TestNoSpace(t *testing.T) {
	mnt := tmpfs(t)
	dir := filepath.Join(mnt, "p", "out")
	names := []string{"a", "b"}

	t.Run("need", func(t *testing.T) {
		_, err := Begin(dir, names, Options{Need: 2 << 20})
		var ns *NoSpaceError
		if !errors.As(err, &ns) || ns.Need != 2<<20 || ns.Free > 1<<20 {
			t.Fatalf("Begin: %#v, want a *NoSpaceError", err)
		}
		if want := dir + ": not enough space: the outputs need about 2 MB, 1 MB free"; err.Error() != want {
			t.Errorf("Begin: %q, want %q", err, want)
		}
		same(t, mnt, map[string]entry{}, "after Begin")
	})

	t.Run("write", func(t *testing.T) {
		r, err := Begin(dir, names, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Abort()
		if err := os.WriteFile(r.Path("a"), []byte("a"), 0o644); err != nil {
			t.Fatal(err)
		}
		err = os.WriteFile(r.Path("b"), bytes.Repeat([]byte("b"), 2<<20), 0o644)
		if !IsNoSpace(err) {
			t.Fatalf("writing 2 MiB: %v, want no space", err)
		}
		r.Abort()
		same(t, mnt, map[string]entry{}, "after Abort")
	})

	// With the disk full, Begin fails writing its lock: a *NoSpaceError,
	// and the folders it created go again.
	t.Run("full", func(t *testing.T) {
		filler := filepath.Join(mnt, "filler")
		f, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Write(make([]byte, 2<<20))
		f.Close()
		if !IsNoSpace(err) {
			t.Fatalf("filling the disk: %v", err)
		}
		defer os.Remove(filler)
		want := snapshot(t, mnt)

		r, err := Begin(dir, names, Options{})
		if err == nil {
			r.Abort()
			t.Fatal("Begin on a full disk succeeded")
		}
		var ns *NoSpaceError
		if !errors.As(err, &ns) || ns.Need != 0 || err.Error() != dir+": no space left on device" {
			t.Errorf("Begin: %#v (%v), want a *NoSpaceError without sizes", err, err)
		}
		same(t, mnt, want, "after Begin")
	})
}

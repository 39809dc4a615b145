package guard

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// report runs send against a Watcher through a pipe, as a child and its
// supervisor would, and returns the Watcher once the reports have ended.
func report(t *testing.T, send func(r *reporter)) *Watcher {
	t.Helper()
	pr, pw := io.Pipe()
	w := Watch(pr)
	send(newReporter(pw))
	pw.Close()
	w.Wait()
	return w
}

// tree lists the files and folders under root, with file contents.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var got []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			got = append(got, rel+"/")
			return nil
		}
		b, err := os.ReadFile(p)
		got = append(got, rel+"="+string(b))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	return got
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p, data string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCleanup replays what an output folder's run reports before a crash;
// Cleanup must undo it newest first: undone forward, folder a would be
// removed before it is empty, and the staging folder before the old output
// moved into it is put back.
func TestCleanup(t *testing.T) {
	root := t.TempDir()
	j := func(p ...string) string { return filepath.Join(append([]string{root}, p...)...) }
	write(t, j("keep"), "user's")
	write(t, j("out"), "old")
	w := report(t, func(r *reporter) {
		r.reading("in1")
		r.reading("in2")
		r.reading("in2")

		mkdir(t, j("a"))
		r.send(line(kindCreated, j("a")))
		mkdir(t, j("a", "b"))
		r.send(line(kindCreated, j("a", "b")))
		r.send(line(kindTempDir, j("a", "b", "stage")))
		mkdir(t, j("a", "b", "stage"))
		mkdir(t, j("a", "b", "stage", "sub"))
		write(t, j("a", "b", "stage", "sub", "x"), "staged")
		write(t, j("a", "b", "lock"), "1")
		r.send(line(kindTemp, j("a", "b", "lock")))

		// Retired: kept.
		write(t, j("published"), "new")
		r.send(line(kindTemp, j("published")))
		r.done([]string{j("published")})

		// Created, but something else went in: kept.
		mkdir(t, j("c"))
		r.send(line(kindCreated, j("c")))
		write(t, j("c", "user"), "theirs")

		// Forced replacement in progress.
		r.send(line(kindMoved, j("out"), j("a", "b", "stage", "old")))
		if err := os.Rename(j("out"), j("a", "b", "stage", "old")); err != nil {
			t.Fatal(err)
		}
		write(t, j("out"), "new")
		r.send(line(kindTemp, j("out")))

		// Reported, never made.
		r.send(line(kindTemp, j("never")))
		r.send(line(kindTempDir, j("nevermore")))
	})
	if got := w.Reading(); got != "in2" {
		t.Errorf("Reading() = %q, want %q", got, "in2")
	}
	if err := w.Cleanup(); err != nil {
		t.Errorf("Cleanup: %v", err)
	}
	want := []string{"c/", "c/user=theirs", "keep=user's", "out=old", "published=new"}
	if got := tree(t, root); !slices.Equal(got, want) {
		t.Errorf("after Cleanup:\n got %q\nwant %q", got, want)
	}
	// Everything was retired: a second call finds nothing to do.
	write(t, j("out"), "newer")
	if err := w.Cleanup(); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
	if b, _ := os.ReadFile(j("out")); string(b) != "newer" {
		t.Errorf("second Cleanup touched out: %q", b)
	}
}

// TestRegistration checks how reports for one path combine.
func TestRegistration(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reports []string // kind, path pairs, reported in order
		removed bool
	}{
		{"temp", []string{kindTemp, "f"}, true},
		{"temp done", []string{kindTemp, "f", kindDone, "f"}, false},
		{"temp done temp", []string{kindTemp, "f", kindDone, "f", kindTemp, "f"}, true},
		{"done before", []string{kindDone, "f", kindTemp, "f"}, true},
		{"done other", []string{kindTemp, "f", kindDone, "g"}, true},
		{"read only", []string{kindRead, "f"}, false},
		{"unknown kind", []string{"remove", "f"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			f := filepath.Join(root, "f")
			write(t, f, "x")
			w := report(t, func(r *reporter) {
				for i := 0; i < len(tc.reports); i += 2 {
					r.send(line(tc.reports[i], filepath.Join(root, tc.reports[i+1])))
				}
			})
			if err := w.Cleanup(); err != nil {
				t.Fatal(err)
			}
			_, err := os.Stat(f)
			if removed := os.IsNotExist(err); removed != tc.removed {
				t.Errorf("removed = %v, want %v", removed, tc.removed)
			}
		})
	}
}

// TestMalformed feeds lines that are not reports: they must register
// nothing, and the lines after them must still be read.
func TestMalformed(t *testing.T) {
	root := t.TempDir()
	odd := filepath.Join(root, "we ird\n\"name\" ")
	write(t, odd, "x")
	var bad []string
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		write(t, filepath.Join(root, n), n)
		bad = append(bad, filepath.Join(root, n))
	}
	pr, pw := io.Pipe()
	w := Watch(pr)
	go func() {
		io.WriteString(pw, "temp "+bad[0]+"\n") // not quoted
		io.WriteString(pw, "temp \""+bad[1]+"\" \""+bad[1]+"\"\n")
		io.WriteString(pw, "moved \""+bad[2]+"\"\n")
		io.WriteString(pw, "\n")
		io.WriteString(pw, "temp \""+bad[3]+"\" trailing\n")
		io.WriteString(pw, "temp \""+bad[4]) // cut short by the end
		pw.Close()
	}()
	w.Wait()
	w = Watch(io.MultiReader(strings.NewReader("garbage\x00\n"), strings.NewReader(line(kindTemp, odd))))
	w.Wait()
	if err := w.Cleanup(); err != nil {
		t.Fatal(err)
	}
	want := []string{"a=a", "b=b", "c=c", "d=d", "e=e"}
	if got := tree(t, root); !slices.Equal(got, want) {
		t.Errorf("after Cleanup:\n got %q\nwant %q", got, want)
	}
}

// TestWait checks that Wait lasts until the end of the reports, and that a
// line too long to be a report does not stop the Watcher reading: a child
// blocked on a full pipe would never exit.
func TestWait(t *testing.T) {
	pr, pw := io.Pipe()
	w := Watch(pr)
	waited := make(chan struct{})
	go func() {
		w.Wait()
		close(waited)
	}()
	io.WriteString(pw, line(kindRead, "in"))
	select {
	case <-waited:
		t.Fatal("Wait returned before the end of the reports")
	case <-time.After(50 * time.Millisecond):
	}
	long := bytes.Repeat([]byte("x"), 3<<20)
	if _, err := pw.Write(long); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after the end of the reports")
	}
	if got := w.Reading(); got != "in" {
		t.Errorf("Reading() = %q, want %q", got, "in")
	}
}

// writes counts Write calls.
type writes struct {
	n   int
	buf bytes.Buffer
}

func (w *writes) Write(p []byte) (int, error) {
	w.n++
	return w.buf.Write(p)
}

// TestDoneOneWrite checks that Done sends its paths in one write, so that
// a crash cannot retire some and not the others.
func TestDoneOneWrite(t *testing.T) {
	var w writes
	newReporter(&w).done([]string{"a", "b c", "d\n"})
	if w.n != 1 {
		t.Errorf("Done made %d writes, want 1", w.n)
	}
	want := "done \"a\"\ndone \"b c\"\ndone \"d\\n\"\n"
	if got := w.buf.String(); got != want {
		t.Errorf("Done wrote %q, want %q", got, want)
	}
	w = writes{}
	newReporter(&w).done(nil)
	if w.n != 0 {
		t.Errorf("Done() made %d writes, want 0", w.n)
	}
}

// TestNoPipe checks that reports without a pipe do nothing.
func TestNoPipe(t *testing.T) {
	var f *os.File
	r := newReporter(f)
	r.send(line(kindTemp, "x"))
	r.reading("x")
	r.done([]string{"x"})
}

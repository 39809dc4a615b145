// Package outdir publishes a run's outputs all at once. A run writes its
// outputs into a hidden staging folder inside the output folder and, when
// the whole run succeeded, Commit renames them into place; otherwise Abort
// removes them. Either way nothing else in the folder is touched: files that
// were there before stay as they were, and with Force an old output is
// replaced only when the new one is published.
//
// A lock file keeps a second run out of the folder while one is under way.
// Everything the package puts on disk is reported through package guard, so
// that a supervising process can undo it if the run crashes.
package outdir

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"badprune/internal/guard"
)

// Names of the package's own files inside an output folder. Outputs may not
// begin with reserved.
const (
	reserved   = ".badprune"
	lockName   = ".badprune.lock"
	stagingPfx = ".badprune-staging-"
	oldName    = ".badprune-old" // inside staging: old outputs moved aside
)

// staleAge is how old an unreadable lock must be to be taken as left over:
// a live run writes its pid right after creating the file.
const staleAge = 5 * time.Second

// Options configure a run.
type Options struct {
	// Force replaces existing outputs when publishing.
	Force bool
	// Need is how many bytes the outputs will take, when known (0:
	// unknown). Begin fails early with a *NoSpaceError when the folder's
	// filesystem has less free.
	Need int64
	// Inputs are the files the run reads. An output that is one of them is
	// an *InputError, Force or not: publishing it would destroy the input.
	// Inputs that do not exist are ignored; reading them will tell.
	Inputs []string
}

// A Run is one run's outputs on their way into a folder. Its methods are
// not safe for concurrent use.
type Run struct {
	dir     string          // the output folder, as given (cleaned)
	names   []string        // every output the run may publish
	known   map[string]bool // names as a set
	force   bool
	created []string // folders Begin made, outermost first
	lock    string   // the lock file, once held
	staging string   // the staging folder, once made
	ended   bool     // after Commit or Abort

	// published, when set, is called after each output is published: a
	// test uses it to crash in the middle of a commit.
	published func(name string)
}

// Begin starts a run writing into dir: it creates dir and any missing
// parents, takes the folder's lock and makes the staging folder. names are
// the base names of every output the run may publish. Begin checks them up
// front: an input in an output's place is an *InputError and, without
// Force, an existing output an *ExistsError. A folder held by a live run is
// an *InUseError; a lock left by a dead one is cleared. On error Begin
// leaves nothing behind.
func Begin(dir string, names []string, opt Options) (*Run, error) {
	if dir == "" {
		dir = "."
	}
	r := &Run{dir: filepath.Clean(dir), known: map[string]bool{}, force: opt.Force}
	for _, n := range names {
		if n == "" || n == "." || n == ".." || n != filepath.Base(n) || strings.HasPrefix(n, reserved) {
			return nil, fmt.Errorf("outdir: %q is not a valid output name", n)
		}
		if r.known[n] {
			return nil, fmt.Errorf("outdir: output %q named twice", n)
		}
		r.known[n] = true
		r.names = append(r.names, n)
	}
	// Check what needs no lock first, so a run bound to fail creates nothing.
	// An input in an output's place comes first: Force would not help.
	if err := r.checkInputs(opt.Inputs); err != nil {
		return nil, err
	}
	for _, n := range r.names {
		if err := r.checkFinal(n); err != nil {
			return nil, err
		}
	}
	if opt.Need > 0 {
		if free, ok := freeSpace(r.dir); ok && free < opt.Need {
			return nil, &NoSpaceError{Dir: r.dir, Need: opt.Need, Free: free}
		}
	}
	if err := r.begin(); err != nil {
		r.release(true)
		r.ended = true
		return nil, err
	}
	return r, nil
}

// checkInputs reports an output whose final path is one of inputs.
func (r *Run) checkInputs(inputs []string) error {
	for _, in := range inputs {
		fi, err := os.Stat(in)
		if in == "" || err != nil {
			continue
		}
		for _, n := range r.names {
			if fo, err := os.Stat(r.Final(n)); err == nil && os.SameFile(fi, fo) {
				return &InputError{Path: r.Final(n), Input: in}
			}
		}
	}
	return nil
}

// checkFinal reports whether output n may be published over what is now at
// its final path.
func (r *Run) checkFinal(n string) error {
	p := r.Final(n)
	fi, err := os.Lstat(p)
	switch {
	case err == nil && !r.force:
		return &ExistsError{Path: p}
	case err == nil && fi.IsDir():
		// Force replaces files, never a user's folder.
		return fmt.Errorf("%s: %w", p, syscall.EISDIR)
	case err == nil, errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		// ENOTDIR: dir itself is missing or a file; creating it will tell.
		return nil
	}
	return r.wrap(p, err)
}

// begin creates the folders, the lock and the staging folder.
func (r *Run) begin() error {
	pid := os.Getpid()
	// A run that created dir and is giving up may remove it between our
	// Mkdir and our lock: then make it again.
	for try := 0; ; try++ {
		if err := r.mkdirs(); err != nil {
			return err
		}
		stale, err := r.takeLock(pid)
		if errors.Is(err, fs.ErrNotExist) && try < 3 {
			continue
		}
		if err != nil {
			return err
		}
		if stale > 0 {
			r.sweep(stale)
		}
		break
	}
	for try := 0; ; try++ {
		p := filepath.Join(r.dir, fmt.Sprintf("%s%d-%08x", stagingPfx, pid, rand.Uint32()))
		// Reported before it exists: the name is this run's alone (it holds
		// the lock and its pid is in the name), so there is no window in
		// which a crash leaves it.
		guard.TempDir(abs(p))
		err := os.Mkdir(p, 0o700)
		if err == nil {
			r.staging = p
			return nil
		}
		guard.Done(abs(p))
		if !errors.Is(err, fs.ErrExist) || try == 9 {
			return r.wrap(p, err)
		}
	}
}

// mkdirs makes dir and its missing parents one at a time, to know exactly
// which ones this run created: a concurrent run may create some of them.
func (r *Run) mkdirs() error {
	var missing []string
	for p := r.dir; ; {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s: %w", p, syscall.ENOTDIR)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return r.wrap(p, err)
		}
		missing = append(missing, p)
		up := filepath.Dir(p)
		if up == p {
			break
		}
		p = up
	}
	for i := len(missing) - 1; i >= 0; i-- {
		p := missing[i]
		err := os.Mkdir(p, 0o755)
		if err == nil {
			r.created = append(r.created, p)
			guard.Created(abs(p))
			continue
		}
		if errors.Is(err, fs.ErrExist) {
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				continue // made by someone else meanwhile: not ours
			}
			return fmt.Errorf("%s: %w", p, syscall.ENOTDIR)
		}
		return r.wrap(p, err)
	}
	return nil
}

// takeLock creates the lock file holding pid. A lock left by a dead run is
// removed and the lock tried once more; stale is then the dead run's pid,
// whose staging folders are to be swept once the lock is ours.
func (r *Run) takeLock(pid int) (stale int, err error) {
	p := filepath.Join(r.dir, lockName)
	for try := 0; ; try++ {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			// Reported once it exists, never before: a loser reporting it
			// and then crashing would have the winner's lock removed.
			guard.Temp(abs(p))
			r.lock = p
			_, err = f.WriteString(strconv.Itoa(pid) + "\n")
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return 0, r.wrap(p, err)
			}
			return stale, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return 0, r.wrap(p, err)
		}
		holder, fi, dead := readLock(p)
		if !dead || try > 0 {
			return 0, &InUseError{Dir: r.dir, PID: holder}
		}
		// Remove only the lock examined: another run may have replaced it.
		if now, err := os.Lstat(p); err == nil && fi != nil && os.SameFile(now, fi) {
			os.Remove(p)
		}
		stale = holder
	}
}

// readLock reads the pid in lock file p and tells whether its run is gone:
// the process is dead, the file vanished, or it has held garbage for long.
// fi is the file examined, nil if it vanished.
func readLock(p string) (pid int, fi fs.FileInfo, dead bool) {
	// The winner of a race writes its pid right after creating the file:
	// give it a moment rather than report an unknown holder.
	for wait := 0; ; wait++ {
		var err error
		fi, err = os.Lstat(p)
		if err != nil {
			return 0, nil, errors.Is(err, fs.ErrNotExist)
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil, true
		}
		pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && perr == nil && pid > 0 {
			kerr := syscall.Kill(pid, 0)
			return pid, fi, kerr != nil && !errors.Is(kerr, syscall.EPERM)
		}
		if time.Since(fi.ModTime()) > staleAge {
			return 0, fi, true
		}
		if wait == 20 {
			return 0, fi, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sweep removes the staging folders of dead run pid. An old output that
// run had moved aside and not yet replaced is put back first; one whose
// place is taken was replaced by that run's publishing and is dropped.
func (r *Run) sweep(pid int) {
	dirs, _ := filepath.Glob(filepath.Join(r.dir, stagingPfx+strconv.Itoa(pid)+"-*"))
	for _, d := range dirs {
		olds, _ := os.ReadDir(filepath.Join(d, oldName))
		for _, o := range olds {
			final := filepath.Join(r.dir, o.Name())
			if _, err := os.Lstat(final); errors.Is(err, fs.ErrNotExist) {
				os.Rename(filepath.Join(d, oldName, o.Name()), final)
			}
		}
		os.RemoveAll(d)
	}
}

// Dir returns the output folder.
func (r *Run) Dir() string { return r.dir }

// Path returns where to write output name now: inside the staging folder.
// name must be one of Begin's names.
func (r *Run) Path(name string) string {
	if !r.known[name] {
		panic(fmt.Sprintf("outdir: %q is not an output of this run", name))
	}
	return filepath.Join(r.staging, name)
}

// Final returns where output name will be published.
func (r *Run) Final(name string) string { return filepath.Join(r.dir, name) }

// step is one published output, kept to undo it.
type step struct {
	final string
	aside string // where the old output was moved, or ""
}

// Commit publishes the outputs written to their Paths, skipping those the
// run did not write, and returns their final paths in Begin's order.
// Without Force an output that appeared meanwhile is an *ExistsError. On
// error nothing is published (old outputs are put back) and the run ends
// as by Abort.
func (r *Run) Commit() ([]string, error) {
	if r.ended {
		return nil, errors.New("outdir: the run has ended")
	}
	var todo []string
	for _, n := range r.names {
		_, err := os.Lstat(r.Path(n))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			err = syncFile(r.Path(n)) // some filesystems report a full disk only now
		}
		if err != nil {
			r.Abort()
			return nil, r.wrap(r.Path(n), err)
		}
		todo = append(todo, n)
	}
	if !r.force {
		for _, n := range todo {
			if _, err := os.Lstat(r.Final(n)); !errors.Is(err, fs.ErrNotExist) {
				r.Abort()
				if err == nil {
					return nil, &ExistsError{Path: r.Final(n)}
				}
				return nil, r.wrap(r.Final(n), err)
			}
		}
	}

	var steps []step
	for _, n := range todo {
		s, err := r.publish(n)
		if err != nil {
			if rerr := r.rollback(steps); rerr != nil {
				err = errors.Join(err, rerr)
			}
			r.Abort()
			return nil, err
		}
		steps = append(steps, s)
		if r.published != nil {
			r.published(n)
		}
	}
	syncDir(r.dir)

	// The commit point: from here a crash keeps the new outputs. One report
	// retires every undo at once, so a crash cannot keep half of them.
	var retire []string
	for _, s := range steps {
		retire = append(retire, abs(s.final))
		if s.aside != "" {
			retire = append(retire, abs(s.aside))
		}
	}
	for _, c := range r.created {
		retire = append(retire, abs(c))
	}
	guard.Done(retire...)
	r.created = nil
	r.release(false)
	r.ended = true

	finals := make([]string, len(steps))
	for i, s := range steps {
		finals[i] = s.final
	}
	return finals, nil
}

// publish moves output n into place, first moving an old output aside into
// the staging folder (with Force), so that it can be put back.
func (r *Run) publish(n string) (step, error) {
	s := step{final: r.Final(n)}
	staged := r.Path(n)
	if r.force {
		fi, err := os.Lstat(s.final)
		if err == nil && fi.IsDir() {
			// Force replaces files, never a user's folder.
			return s, fmt.Errorf("%s: %w", s.final, syscall.EISDIR)
		}
		if err == nil {
			old := filepath.Join(r.staging, oldName)
			if err := os.Mkdir(old, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return s, r.wrap(old, err)
			}
			aside := filepath.Join(old, n)
			guard.Moved(abs(s.final), abs(aside))
			if err := os.Rename(s.final, aside); err != nil {
				guard.Done(abs(aside))
				return s, r.wrap(s.final, err)
			}
			s.aside = aside
		}
		if err := os.Rename(staged, s.final); err != nil {
			return s, r.undo(s, r.wrap(s.final, err))
		}
		guard.Temp(abs(s.final))
		return s, nil
	}
	// A link never replaces a file that appeared since the check.
	err := os.Link(staged, s.final)
	switch {
	case err == nil:
		guard.Temp(abs(s.final))
		os.Remove(staged)
		return s, nil
	case errors.Is(err, fs.ErrExist):
		return s, &ExistsError{Path: s.final}
	}
	// No hard links on this filesystem: check, then rename.
	if _, err := os.Lstat(s.final); err == nil {
		return s, &ExistsError{Path: s.final}
	}
	if err := os.Rename(staged, s.final); err != nil {
		return s, r.wrap(s.final, err)
	}
	guard.Temp(abs(s.final))
	return s, nil
}

// undo puts back the old output of a step whose new output is not in
// place; err is why, returned with any failure to put it back.
func (r *Run) undo(s step, err error) error {
	if s.aside == "" {
		return err
	}
	if rerr := os.Rename(s.aside, s.final); rerr != nil {
		return errors.Join(err, r.lost(s, rerr))
	}
	guard.Done(abs(s.aside))
	return err
}

// rollback unpublishes steps, newest first, putting old outputs back.
func (r *Run) rollback(steps []step) error {
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		s := steps[i]
		var err error
		if s.aside != "" {
			err = os.Rename(s.aside, s.final) // replaces the new output
		} else {
			err = os.Remove(s.final)
		}
		if err != nil && s.aside != "" {
			errs = append(errs, r.lost(s, err))
			continue
		}
		if err != nil {
			errs = append(errs, r.wrap(s.final, err))
		}
		guard.Done(abs(s.final))
		if s.aside != "" {
			guard.Done(abs(s.aside))
		}
	}
	return errors.Join(errs...)
}

// lost handles an old output that could not be put back: the staging
// folder is kept, and no longer reported, so the file survives even a
// crash; the error says where it is.
func (r *Run) lost(s step, err error) error {
	guard.Done(abs(s.aside), abs(s.final), abs(r.staging))
	r.staging = ""
	return fmt.Errorf("%s: the old file could not be put back (%w); it is kept as %s", s.final, cause(err), s.aside)
}

// Abort removes the staging folder, the lock, and each folder Begin created
// that is now empty. It does nothing after Commit or a first Abort, so it
// can be deferred.
func (r *Run) Abort() {
	if r.ended {
		return
	}
	r.ended = true
	r.release(true)
}

// release removes what the run holds, each before retiring its report so
// that a crash in between still has it removed; with created, also the
// folders Begin created, innermost first, when empty.
func (r *Run) release(created bool) {
	if r.staging != "" {
		os.RemoveAll(r.staging)
		guard.Done(abs(r.staging))
		r.staging = ""
	}
	if r.lock != "" {
		os.Remove(r.lock)
		guard.Done(abs(r.lock))
		r.lock = ""
	}
	if created {
		for i := len(r.created) - 1; i >= 0; i-- {
			os.Remove(r.created[i]) // fails, as it should, when not empty
			guard.Done(abs(r.created[i]))
		}
		r.created = nil
	}
}

// wrap names path in err, or turns a full disk into a *NoSpaceError.
func (r *Run) wrap(path string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return &NoSpaceError{Dir: r.dir}
	}
	return fmt.Errorf("%s: %w", path, cause(err))
}

// cause strips the path an os error carries, so it is not named twice.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// abs returns p absolute for guard's reports, so the supervisor finds it
// whatever its own working folder.
func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// freeSpace returns the bytes free to unprivileged users on the
// filesystem that holds, or will hold, dir.
func freeSpace(dir string) (int64, bool) {
	for p := dir; ; {
		var st syscall.Statfs_t
		err := syscall.Statfs(p, &st)
		if err == nil {
			return int64(st.Bavail) * int64(st.Bsize), true
		}
		up := filepath.Dir(p)
		if up == p || !(errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) {
			return 0, false
		}
		p = up
	}
}

// syncFile flushes the file at p to disk.
func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes renames in dir durable; it is best effort, as some
// filesystems cannot sync a folder.
func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		f.Sync()
		f.Close()
	}
}

// Package atomicfile writes output files so that a reader, or a user after
// a crash or Ctrl-C, finds either no file or a complete one: data go to a
// temporary file in the destination's folder, are synced, then renamed.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"badprune/internal/guard"
)

// File is an output being written.
type File struct {
	*os.File
	path  string
	force bool
	done  bool
}

// CheckFree reports an error when path exists and force is not set.
func CheckFree(path string, force bool) error {
	if force {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s: already exists (use --force to overwrite)", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", path, errors.Unwrap(err))
	}
	return nil
}

// Create starts writing path. Without force an existing path is an error.
func Create(path string, force bool) (*File, error) {
	if err := CheckFree(path, force); err != nil {
		return nil, err
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("%s: cannot write: %w", path, errors.Unwrap(err))
	}
	guard.Temp(tmp.Name())
	return &File{File: tmp, path: path, force: force}, nil
}

// Commit syncs the data and moves the file into place.
func (f *File) Commit() error {
	if f.done {
		return errors.New("atomicfile: already finished")
	}
	f.done = true
	tmp := f.Name()
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = CheckFree(f.path, f.force)
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, f.path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	guard.Done(tmp)
	if err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	return nil
}

// Abort drops the file; after Commit it does nothing, so it can be deferred.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.Close()
	os.Remove(f.Name())
	guard.Done(f.Name())
}

// TempPath names a temporary file beside path for a writer that must
// create the file itself (the HDF5 library does), and reports it to a
// supervisor; rename it into place or remove it, then call guard.Done.
func TempPath(path string) string {
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.tmp-%d", filepath.Base(path), os.Getpid()))
	guard.Temp(tmp)
	return tmp
}

// WriteFile writes data to path atomically.
func WriteFile(path string, data []byte, force bool) error {
	f, err := Create(path, force)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Commit()
}

// SameFile reports whether paths a and b both exist and are one file.
func SameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

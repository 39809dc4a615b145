package outdir

import (
	"errors"
	"fmt"
	"syscall"
)

// An ExistsError reports an output that exists and may not be replaced.
type ExistsError struct {
	Path string
}

// Error returns "PATH: already exists".
func (e *ExistsError) Error() string { return e.Path + ": already exists" }

// An InputError reports an output that would replace one of the run's
// inputs.
type InputError struct {
	Path  string // the output's final path
	Input string // the input, as given
}

func (e *InputError) Error() string {
	return fmt.Sprintf("%s: output would overwrite the input %s", e.Path, e.Input)
}

// An InUseError reports a folder another run holds.
type InUseError struct {
	Dir string
	PID int // the other run's process, 0 if unknown
}

// Error names the folder and, when known, the other run's pid.
func (e *InUseError) Error() string {
	if e.PID <= 0 {
		return e.Dir + ": in use by another badprune run"
	}
	return fmt.Sprintf("%s: in use by another badprune run (pid %d)", e.Dir, e.PID)
}

// A NoSpaceError reports that the outputs do not fit in the folder's
// filesystem: known before writing when Need is set, else found writing.
type NoSpaceError struct {
	Dir  string
	Need int64 // bytes the outputs need, 0 if unknown
	Free int64 // bytes free, when Need is known
}

// Error gives the sizes in MB when Need is known.
func (e *NoSpaceError) Error() string {
	if e.Need <= 0 {
		return e.Dir + ": no space left on device"
	}
	const mb = 1 << 20
	// Need rounds up and Free down, so the figures never look enough.
	return fmt.Sprintf("%s: not enough space: the outputs need about %d MB, %d MB free", e.Dir, (e.Need+mb-1)/mb, e.Free/mb)
}

// Unwrap makes errors.Is(err, syscall.ENOSPC) hold for a *NoSpaceError.
func (e *NoSpaceError) Unwrap() error { return syscall.ENOSPC }

// IsNoSpace reports whether err is a full disk: a *NoSpaceError, or
// ENOSPC from writing a file, such as one another package writes to a Path.
func IsNoSpace(err error) bool {
	var ns *NoSpaceError
	return errors.As(err, &ns) || errors.Is(err, syscall.ENOSPC)
}

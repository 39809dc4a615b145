// Package progress reports how far a long job has come: a redrawn bar with
// rate and time left when the output is a terminal, a plain line every few
// seconds otherwise, nothing when quiet.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Reporter tracks one task at a time.
type Reporter struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	task     string
	unit     string
	total    int
	done     int
	start    time.Time
	lastDraw time.Time
}

// New reports to w, drawing a bar when tty is set; nothing is written when
// w is nil.
func New(w io.Writer, tty bool) *Reporter {
	return &Reporter{w: w, tty: tty}
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Start begins a task of total units (images, steps, ...).
func (r *Reporter) Start(task string, total int, unit string) {
	if r == nil || r.w == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.task, r.total, r.unit, r.done = task, total, unit, 0
	r.start = time.Now()
	r.lastDraw = time.Time{}
	if !r.tty {
		fmt.Fprintf(r.w, "%s: %d %s\n", task, total, unit)
	}
}

// Add records n more units done.
func (r *Reporter) Add(n int) {
	if r == nil || r.w == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done += n
	now := time.Now()
	every := 5 * time.Second
	if r.tty {
		every = 100 * time.Millisecond
	}
	if now.Sub(r.lastDraw) < every && r.done < r.total {
		return
	}
	r.lastDraw = now
	el := now.Sub(r.start).Seconds()
	rate := float64(r.done) / max(el, 1e-9)
	left := "?"
	if rate > 0 && r.total >= r.done {
		left = (time.Duration(float64(r.total-r.done)/rate*1e9) / time.Second * time.Second).String()
	}
	if r.tty {
		const width = 30
		fill := 0
		if r.total > 0 {
			fill = width * r.done / r.total
		}
		fmt.Fprintf(r.w, "\r%-22s [%s%s] %d/%d %s  %.0f/s  %s left ", r.task,
			strings.Repeat("=", fill), strings.Repeat(" ", width-fill), r.done, r.total, r.unit, rate, left)
		if r.done >= r.total {
			fmt.Fprintln(r.w)
		}
		return
	}
	if r.done < r.total {
		fmt.Fprintf(r.w, "%s: %d/%d %s, %.0f/s, %s left\n", r.task, r.done, r.total, r.unit, rate, left)
	} else {
		fmt.Fprintf(r.w, "%s: done, %d %s in %.1fs\n", r.task, r.total, r.unit, el)
	}
}

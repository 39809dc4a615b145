// Package must calls the constructors and loaders tests depend on, failing
// the test on an error.
package must

import "testing"

// Get returns f(arg), failing tb on f's error.
func Get[A, T any](tb testing.TB, f func(A) (T, error), arg A) T {
	tb.Helper()
	v, err := f(arg)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

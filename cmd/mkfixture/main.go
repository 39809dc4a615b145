// Command mkfixture writes the test fixtures in testdata/: random tiny
// models and sets for the unit tests. Same code, same bytes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"badprune/internal/fixture"
)

func main() {
	out := flag.String("out", "testdata", "testdata folder")
	flag.Parse()
	dir := filepath.Join(*out, "tiny")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "mkfixture:", err)
		os.Exit(1)
	}
	if err := fixture.Generate(dir); err != nil {
		fmt.Fprintln(os.Stderr, "mkfixture:", err)
		os.Exit(1)
	}
	fmt.Println("wrote", dir)
}

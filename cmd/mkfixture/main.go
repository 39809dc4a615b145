// Command mkfixture writes the fixtures in testdata/: the random tiny
// models and sets the unit tests read, and with -lab the demo's lab (a
// BadNet trained on synthetic faces, in the lab's layout). Same code, same
// bytes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"badprune/internal/demo/labdemo"
	"badprune/internal/testsupport/fixture"
)

func main() {
	out := flag.String("out", "testdata", "testdata folder")
	lab := flag.Bool("lab", false, "also make the demo lab (trains a network: minutes)")
	flag.Parse()
	if err := run(*out, *lab); err != nil {
		fmt.Fprintln(os.Stderr, "mkfixture:", err)
		os.Exit(1)
	}
}

func run(out string, lab bool) error {
	dir := filepath.Join(out, "tiny")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := fixture.Generate(dir); err != nil {
		return err
	}
	fmt.Println("wrote", dir)
	dir = filepath.Join(out, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := fixture.Images(dir); err != nil {
		return err
	}
	fmt.Println("wrote", dir)
	if !lab {
		return nil
	}
	cfg := labdemo.Default()
	cfg.Log = os.Stdout
	dir = filepath.Join(out, "lab")
	if err := labdemo.Generate(context.Background(), dir, cfg); err != nil {
		return err
	}
	fmt.Println("wrote", dir)
	return nil
}

# badprune: `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/badprune
export CGO_ENABLED := 1

.PHONY: all deps build test demo bench bench-peer fixtures clean

all: build

# gonum.org/v1/hdf5 links the HDF5 C library through pkg-config.
deps:
	@if ! pkg-config --exists hdf5 2>/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "badprune needs Debian's libhdf5-dev and pkg-config; run as root: apt-get install -y libhdf5-dev pkg-config" >&2; \
	    exit 1; \
	  fi; \
	  echo "installing libhdf5-dev and pkg-config (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libhdf5-dev pkg-config >/dev/null; \
	fi

build: deps
	$(GO) build -o $(BIN) ./cmd/badprune

# Unit tests, then a few seconds of fuzzing per reader (seeded from
# testdata/; findings become files under testdata/fuzz and regression tests).
FUZZ := -run='^$$' -fuzztime=3s -fuzzminimizetime=20x
test: deps
	$(GO) vet ./...
	$(GO) test ./...
	$(GO) test $(FUZZ) -fuzz='^FuzzDecode$$' ./internal/imageio
	$(GO) test $(FUZZ) -fuzz='^FuzzConfig$$' ./internal/model
	$(GO) test $(FUZZ) -fuzz='^FuzzDataFile$$' ./cmd/badprune
	$(GO) test $(FUZZ) -fuzz='^FuzzModelFile$$' ./cmd/badprune

demo: build
	$(BIN) eval --model testdata/tiny/model_full.h5 --test testdata/tiny/clean_u8_nchw.h5 --bd-test testdata/tiny/bd_u8_nchw.h5

# Regenerate testdata/ (same code, same bytes).
fixtures: deps
	$(GO) run ./cmd/mkfixture -out testdata

clean:
	rm -rf bin out

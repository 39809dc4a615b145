# badprune: `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/badprune
export CGO_ENABLED := 1

.PHONY: all deps build test demo bench bench-peer fixtures fixtures-lab fixtures-onnx onnxpb clean

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
# Fuzzing runs a fixed number of inputs, not a time: Go 1.26's coordinator
# can fail a time-limited run with "context deadline exceeded"
# (golang/go#75804), and a fixed count also costs the same on a busy machine.
FUZZ := -run='^$$' -fuzzminimizetime=20x
test: deps
	$(GO) vet ./...
	$(GO) test ./...
	$(GO) test $(FUZZ) -fuzztime=50000x -fuzz='^FuzzDecode$$' ./internal/imageio
	$(GO) test $(FUZZ) -fuzztime=20000x -fuzz='^FuzzConfig$$' ./internal/model
	$(GO) test $(FUZZ) -fuzztime=1000x -fuzz='^FuzzRead$$' ./internal/onnxmodel
	$(GO) test $(FUZZ) -fuzztime=60x -fuzz='^FuzzDataFile$$' ./cmd/badprune
	$(GO) test $(FUZZ) -fuzztime=60x -fuzz='^FuzzModelFile$$' ./cmd/badprune

# The defense end to end on the demo lab (testdata/lab, the lab's layout):
# prune; fine-prune B'_10 (repair --finetune); evaluate B, each B' and G;
# plot. Then the same against the pruning-aware BadNet. All in out/demo/.
DEMO := out/demo
LAB  := testdata/lab
FT   := --finetune --ft-lr 5e-3 --ft-l2 1e-3 --ft-epochs 16 --ft-patience 0
demo: build
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	@echo "== the demo BadNet: prune conv_3, fine-prune B'_10, evaluate, plot"
	cd $(LAB) && ../../$(BIN) repair -q --out ../../$(DEMO)
	cd $(LAB) && ../../$(BIN) repair -q --threshold 10 $(FT) --out ../../$(DEMO)/finetune
	cd $(LAB) && ../../$(BIN) eval --goodnet -q --repaired ../../$(DEMO)/ --repaired ../../$(DEMO)/finetune/finetuned_10.h5 --out ../../$(DEMO)
	$(BIN) plot --log $(DEMO)/prune_log.json --eval $(DEMO)/eval.json --out $(DEMO)
	$(BIN) plot --finetune --log $(DEMO)/finetune/prune_log.json --out $(DEMO)/finetune
	@echo
	@echo "== the pruning-aware BadNet: pruning alone, then fine-pruning"
	cd $(LAB) && ../../$(BIN) repair -q --model models/pa_bd_net.h5 --out ../../$(DEMO)/pruning-aware
	cd $(LAB) && ../../$(BIN) repair -q --model models/pa_bd_net.h5 --threshold 10 $(FT) --out ../../$(DEMO)/pruning-aware/finetune
	cd $(LAB) && ../../$(BIN) eval --goodnet -q --model models/pa_bd_net.h5 --repaired ../../$(DEMO)/pruning-aware/ \
	  --repaired ../../$(DEMO)/pruning-aware/finetune/finetuned_10.h5 --out ../../$(DEMO)/pruning-aware
	$(BIN) plot --log $(DEMO)/pruning-aware/prune_log.json --eval $(DEMO)/pruning-aware/eval.json --out $(DEMO)/pruning-aware
	$(BIN) plot --finetune --log $(DEMO)/pruning-aware/finetune/prune_log.json --out $(DEMO)/pruning-aware/finetune

# Regenerate testdata/ (same code, same bytes): the tiny fixtures and seed
# images; fixtures-lab also retrains the demo's two BadNets (minutes).
fixtures: deps
	$(GO) run ./cmd/mkfixture -out testdata

fixtures-lab: deps
	$(GO) run ./cmd/mkfixture -out testdata -lab

# The ONNX fixtures in testdata/onnx: small PyTorch CNNs (and the lab's
# DeepID, weights from its Keras file) exported by torch.onnx.export, with
# PyTorch's own logits beside each. Needs Debian's python3-torch,
# python3-onnx and python3-h5py; make test needs none of them.
PYTHON := /usr/bin/python3
fixtures-onnx:
	@$(PYTHON) -c 'import torch, onnx, h5py' 2>/dev/null || { \
	  if [ "$$(id -u)" != 0 ]; then echo "the ONNX fixtures need python3-torch, python3-onnx and python3-h5py (apt-get, as root)" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-onnx python3-h5py >/dev/null; }
	$(PYTHON) scripts/export_onnx.py testdata

# Regenerate internal/third_party/onnxpb from the ONNX schema python3-onnx ships, with
# protoc and the protoc-gen-go of the protobuf module in go.mod.
ONNX_PROTO = $(shell dpkg -L python3-onnx 2>/dev/null | grep '/onnx-ml\.proto$$')
onnxpb:
	@command -v protoc >/dev/null || { echo "make onnxpb needs protoc: apt-get install -y protobuf-compiler" >&2; exit 1; }
	@if [ -n "$(ONNX_PROTO)" ]; then cp $(ONNX_PROTO) internal/third_party/onnxpb/onnx-ml.proto; fi
	mkdir -p .cache && $(GO) build -o .cache/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	$(GO) generate ./internal/third_party/onnxpb

# Lab-scale benchmarks (sets generated once into .cache/bench, outside
# git): repair, eval --goodnet, one fine-tuning epoch, and the trunk.
BENCH := .cache/bench
bench: build
	@[ -f $(BENCH)/data/bd/bd_test.h5 ] || $(GO) run ./cmd/mkbench -out $(BENCH)
	$(GO) run ./cmd/bench -dir $(BENCH) -bin $(BIN) -runs 3
	$(GO) test -run='^$$' -bench='^BenchmarkTrunk$$' -benchtime=40x -count=3 ./internal/model

# The same repair and a fine-tuning epoch beside the independent PyTorch
# peer (../shared/peer), in one run on the same files. Without
# libopenblas0-pthread Debian's torch uses the reference BLAS, about 6 times
# slower in dense layers: no honest peer.
bench-peer: build
	@[ -d ../shared/peer ] || { echo "no ../shared/peer: nothing to compare with"; exit 1; }
	@{ /usr/bin/python3 -c 'import torch, h5py' 2>/dev/null && dpkg -s libopenblas0-pthread >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" != 0 ]; then echo "the peer needs python3-torch, python3-h5py and libopenblas0-pthread (apt-get, as root)" >&2; exit 1; fi; \
	  echo "installing python3-torch, python3-h5py, libopenblas0-pthread (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-h5py python3-pil libopenblas0-pthread >/dev/null; }
	@[ -f $(BENCH)/data/bd/bd_test.h5 ] || $(GO) run ./cmd/mkbench -out $(BENCH)
	$(GO) run ./cmd/bench -dir $(BENCH) -bin $(BIN) -runs 3 -peer ../shared/peer

clean:
	rm -rf bin out

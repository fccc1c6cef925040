# `make demo` builds the offline default dataset and fine-tunes on it; `make test` runs the tests.
RECIPE ?= recipes/face-or-not.toml
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TFLITE := $(VENV)/.tflite

.PHONY: help install install-tflite dataset finetune demo evaluate test test-fast lint format clean-runs

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

install: $(STAMP)  ## create .venv and install the package with its extras (not tflite)

# constraints.txt pins torch 2.14.1/torchvision 0.29.1, the pair fastai runs on here.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[detect,web,serve,review,faces,tensorboard,onnx,lite,distributed,ray,img2dataset,test]'
	@# Debian sources use `apt-get download`, which needs package lists: fetch them once when root.
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then apt-get update -qq; fi
	touch $(STAMP)

# the phone export (about 1 GB: litert-torch, jax, the LiteRT converter); the tests need it, the demo not
install-tflite: $(TFLITE)  ## also the phone export (about 1 GB)

$(TFLITE): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[detect,web,serve,review,faces,tensorboard,onnx,lite,distributed,ray,img2dataset,test,tflite]'
	touch $(TFLITE)

dataset: install  ## build datasets/NAME/ for RECIPE
	$(BIN)/chiquito dataset $(RECIPE)

finetune: install  ## train runs/NAME/ for RECIPE
	$(BIN)/chiquito finetune $(RECIPE)

demo: dataset finetune  ## dataset + finetune of RECIPE (default: the offline default recipe)

evaluate: install  ## evaluate runs/NAME/model.pkl again
	$(BIN)/chiquito evaluate $(RECIPE)

test: install-tflite  ## the whole suite (what CI runs)
	$(BIN)/python -m pytest -q

# no training, no browser, no registry download, no tflite extra: the tier to run on every change
test-fast: install  ## the tests that train nothing, start no browser and fetch nothing (4 workers)
	$(BIN)/python -m pytest -q -m "not slow and not browser and not registry" -n 4

lint: install  ## ruff (lint rules, import order, C901, formatting) and the complexity gate (radon CC <= 15)
	$(BIN)/python -m ruff check chiquito_or_not tests bench
	$(BIN)/python -m ruff format --check chiquito_or_not tests bench
	$(BIN)/python -m tests.complexity_gate

format: install  ## rewrite the code in ruff's format, imports sorted
	$(BIN)/python -m ruff check --select I --fix chiquito_or_not tests bench
	$(BIN)/python -m ruff format chiquito_or_not tests bench

clean-runs:  ## delete runs/
	rm -rf runs

# `make demo` builds the offline default dataset and fine-tunes on it; `make test` runs the tests.
RECIPE ?= recipes/face-or-not.toml
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TFLITE := $(VENV)/.tflite

.PHONY: install install-tflite dataset finetune demo evaluate test test-fast lint clean-runs

install: $(STAMP)

# constraints.txt pins torch 2.14.1/torchvision 0.29.1, the pair fastai runs on here.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[web,serve,review,faces,tensorboard,onnx,lite,test]'
	@# Debian sources use `apt-get download`, which needs package lists: fetch them once when root.
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then apt-get update -qq; fi
	touch $(STAMP)

# the phone export (about 1 GB: litert-torch, jax, the LiteRT converter); the tests need it, the demo not
install-tflite: $(TFLITE)

$(TFLITE): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[web,serve,review,faces,tensorboard,onnx,lite,test,tflite]'
	touch $(TFLITE)

dataset: install
	$(BIN)/chiquito dataset $(RECIPE)

finetune: install
	$(BIN)/chiquito finetune $(RECIPE)

demo: dataset finetune

evaluate: install
	$(BIN)/chiquito evaluate $(RECIPE)

test: install-tflite
	$(BIN)/python -m pytest -q

# no training and no browser, 4 workers (most of these tests wait on loopback servers): under a minute
test-fast: install-tflite
	$(BIN)/python -m pytest -q -m "not slow and not browser" -n 4

lint: install
	$(BIN)/python -m ruff check chiquito_or_not tests bench

clean-runs:
	rm -rf runs

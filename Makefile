# Quick start:  make train   (set up, train the default VAE on the embedded MNIST digits, evaluate)
#               make test    (set up, run the test suite)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= runs/vae
CONFIG  ?= configs/vae.py

.PHONY: setup lint train test test-all bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py constraints.txt $(wildcard genjax/native/*)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt --build-constraint constraints.txt -e '.[test]'
	touch $@

train: setup
	$(PY) -m genjax.cli.train --config=$(CONFIG) --workdir=$(WORKDIR)
	$(PY) -m genjax.cli.evaluate --config=$(CONFIG) --workdir=$(WORKDIR) --checkpoint=best
	$(PY) -m genjax.cli.sample --config=$(CONFIG) --workdir=$(WORKDIR) --num=64

# Formatting and lint (ruff, configured in pyproject.toml); part of `make test`, so drift fails CI.
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# The suite minus the long learning checks (marked slow); 11-17 minutes on 2 cores from a cold compile cache (README).
test: setup lint
	$(PY) -m pytest -q -n 2 -m "not slow"

test-all: setup lint
	$(PY) -m pytest -q -n 2

bench: setup
	$(PY) -m genjax.benchmarks.suite

clean:
	rm -rf runs .pytest_cache

# Quick start:  make train   (set up, train the default VAE on the embedded MNIST digits, evaluate)
#               make test    (set up, run the test suite)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= runs/vae
CONFIG  ?= configs/vae.py

.PHONY: setup train test test-all bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

train: setup
	$(PY) -m experiments.train --config=$(CONFIG) --workdir=$(WORKDIR)
	$(PY) -m experiments.evaluate --config=$(CONFIG) --workdir=$(WORKDIR) --checkpoint=best
	$(PY) -m experiments.sample --config=$(CONFIG) --workdir=$(WORKDIR) --num=64

# The suite minus the long learning checks (marked slow); about 8 minutes on 2 cores from a cold compile cache.
test: setup
	$(PY) -m pytest -q -n 2 -m "not slow"

test-all: setup
	$(PY) -m pytest -q -n 2

bench: setup
	$(PY) -m benchmarks.suite

clean:
	rm -rf runs .pytest_cache

# eo-fusion developer entry points. Every target creates/reuses .venv and installs pinned
# dependencies itself (requirements/lock.txt), so `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Keep the library's thread pools from oversubscribing the 2-core machines we run on.
export OMP_NUM_THREADS ?= 2
export MPLBACKEND ?= Agg

.PHONY: install demo test lint format typecheck model docs benchmark clean sample-catalog wheel

install: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c requirements/lock.txt -e '.[ml,notebooks,dev]'
	touch $(STAMP)

## Run the sample land-cover job on the embedded sample catalog (writes out/sample-landcover/).
demo: install
	$(VENV)/bin/eo-fusion map pipelines/sample_landcover.yaml

## The whole test suite, with lint, format and type checks (what CI runs).
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: install
	$(VENV)/bin/mypy

## Regenerate the bundled model (pretrain + fine-tune on the sample catalog) and docs/model.md.
model: install
	$(PY) -m tools.bundle_model

## Rebuild the embedded sample catalog (catalogs/sample/stac) from catalogs/sample/data.
sample-catalog: install
	$(PY) -m tools.sample_catalog

## Regenerate docs/configuration.md and docs/cli.md from the code.
docs: install
	$(PY) -m tools.docs_gen

## Build the wheel into dist/ (catalogs, sample catalog and bundled model are package data).
wheel: install
	rm -rf build
	$(PY) -m build --wheel --no-isolation

## Peers measured in the same run; regenerates the tables in docs/performance.md (about 25 min
## on an idle 2-core machine: stacking 1000² px, map job 1000² px x 3 rounds, a 1/64 S2 tile).
## terratorch (the map job's peer) lives in its own venv: TT_VENV (made here when missing).
TT_VENV ?= /tmp/ttvenv
TERRATORCH ?= terratorch==1.2.11
benchmark: install $(TT_VENV)/bin/python
	$(PY) benchmarks/bench_stack.py --full --doc docs/performance.md
	$(PY) benchmarks/bench_map.py --tt-python $(TT_VENV)/bin/python --doc docs/performance.md
	$(PY) benchmarks/bench_tile.py --doc docs/performance.md
	$(PY) benchmarks/bench_inference.py

$(TT_VENV)/bin/python:
	$(PYTHON) -m venv $(TT_VENV)
	$(TT_VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1 "$(TERRATORCH)" psutil

clean:
	rm -rf out .pytest_cache build dist

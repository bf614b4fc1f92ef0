# Set-up and checks. Every target builds .venv itself on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The workdir `ser serve` / `ser predict` read by default (ser.registry.default_workdir: $SER_WORKDIR or ./runs), so
# that they serve what `make demo` registered.
WORKDIR ?= $(or $(SER_WORKDIR),runs)
# `make pretrained`: the bundled model (src/ser/pretrained/ravdess-cnn), its recipe and data from this config.
PRETRAINED_CONFIG ?= configs/ravdess-all.yaml
PRETRAINED_WORKDIR ?= runs/pretrained

.PHONY: venv demo test lint bench clean pretrained

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: an open range would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[ml,ssl,pipeline,serve,monitor,scale,dev]"
	touch $(STAMP)

venv: $(STAMP)

## The main job on the embedded default: the whole pipeline on the synthetic demo corpus.
demo: $(STAMP)
	$(BIN)/ser pipeline run --workdir $(WORKDIR)

## Rebuild the bundled pretrained model: the pipeline on PRETRAINED_CONFIG, then the registered folder copied into
## the package with the run record's metrics (same run record, same metrics; the bytes may differ).
pretrained: $(STAMP)
	nice -n 5 $(BIN)/ser pipeline pretrained --config $(PRETRAINED_CONFIG) --workdir $(PRETRAINED_WORKDIR)

## Lint (ruff, layer contracts, types) + the whole test suite.
test: lint
	$(BIN)/python -m pytest -q

## The static checks alone: ruff (lint + format), import-linter (layers), mypy (src). Also the pre-commit hooks.
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks dags tests_airflow
	$(BIN)/ruff format --check src tests benchmarks dags tests_airflow
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest_validate.py

clean:
	rm -rf $(VENV) out runs .pytest_cache .ruff_cache

# Set-up and checks. Every target builds .venv itself on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
WORKDIR ?= runs/demo

.PHONY: venv demo test lint bench clean

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

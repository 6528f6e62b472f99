# Every target sets itself up: a virtual environment in .venv with the project and its test
# tools installed (re-installed when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench mutation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)  ## the whole job on SQLite and the built-in sandbox
	$(BIN)/referrals-etl demo

# The whole test suite with branch coverage of etl/ (fails below the floor in pyproject.toml).
# PostgreSQL and MariaDB tests skip without servers, except in CI.
test: $(STAMP)  ## the whole test suite, with branch coverage of etl/
	$(BIN)/python -m pytest -n 2 --dist loadfile -q --cov=etl --cov-branch --cov-report=term

lint: $(STAMP)  ## ruff (rules and format) and mypy --strict over etl/, tests/ and bench/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)  ## the benchmark table (see bench/README.md)
	$(BIN)/python -m bench

# Mutation testing of the two pure modules, etl/flatten.py and etl/ids.py, with their fast tests
# (tests/test_flatten.py and tests/test_ids.py without the `slow` ones): mutmut changes the code
# one small way at a time in a copy (mutants/) and checks that a test fails. Prints the score
# of each file and fails below 97% (flatten) or 95% (ids). Minutes, not seconds: not part of
# `make test` or CI. Equivalent mutants, and how to look at a survivor: docs/mutation.md.
MUTATION_JOBS ?= 2
mutation: $(STAMP)  ## mutation scores of etl/flatten.py and etl/ids.py (docs/mutation.md)
	rm -rf mutants && mkdir mutants
	$(BIN)/mutmut run --max-children $(MUTATION_JOBS) > mutants/run.log 2>&1 || (tail -c 4000 mutants/run.log; exit 1)
	$(BIN)/python scripts/mutation_score.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.* referrals-demo.db mutants

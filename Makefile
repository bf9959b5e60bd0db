# aislecast: two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test check lint typecheck pytest bench clean deps

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@touch $(STAMP)

deps: $(STAMP)
	@scripts/ensure-mosquitto.sh

## demo: the simulated store end to end, with a live view (Ctrl-C stops everything)
demo: deps
	$(BIN)/aislecast demo

## test: ruff, mypy --strict and pytest
test: check pytest

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: deps
	$(BIN)/pytest -q

## bench: every benchmark, as a table (add ARGS=--json for JSON)
bench: deps
	$(BIN)/aislecast bench $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info

# aislecast: two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test check lint typecheck layers pytest bench clean deps

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@# benchmarks/ is not in the wheel: a checkout's venv finds it (and `aislecast bench`) here
	@echo "$(CURDIR)" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/aislecast-checkout.pth"
	@touch $(STAMP)

deps: $(STAMP)
	@scripts/ensure-mosquitto.sh

## demo: the simulated store end to end, with a live view (Ctrl-C stops everything)
demo: deps
	$(BIN)/aislecast demo

## test: ruff, mypy --strict, import-linter layer contracts and pytest
test: check pytest

## check: ruff, mypy --strict and the import-linter contracts (layers, role extras, privacy)
check: lint typecheck layers

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

pytest: deps
	$(BIN)/pytest -q

## bench: every benchmark, as a table (add ARGS=--json for JSON)
bench: deps
	$(BIN)/aislecast bench $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info

# aislecast: two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test check lint typecheck layers pytest fuzz fuzz-inputs bench clean deps

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

## test: ruff, mypy --strict, import-linter layer contracts and pytest (four xdist workers, see pyproject)
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

## fuzz: schemathesis against a real HQ's /openapi.json as an admin, bounded (~90 s):
## no 5xx, responses match their schemas (ARGS="--max-time 300 --seed 7" for a longer one)
fuzz: deps
	$(BIN)/python scripts/fuzz_http.py $(ARGS)

## fuzz-inputs: hypothesis against NDEF, every MQTT payload kind, signed bundles and deltas,
## in-process on real components, 11 s a target: no exception escapes, no hang, memory bounded
## (ARGS="--budget 160 --seed 7 -v" for a longer one)
fuzz-inputs: $(STAMP)
	$(BIN)/python -m benchmarks.fuzz_inputs $(ARGS)

## bench: every benchmark, as a table (ARGS="e2e --quick" for some, ARGS=--json for JSON);
## the run's JSON goes to docs/bench/last-run.json (date, machine) and the README's table
bench: deps
	@mkdir -p artifacts
	AISLECAST_BENCH_JSON=artifacts/bench.json $(BIN)/aislecast bench $(ARGS) $(if $(findstring --json,$(ARGS)),> artifacts/bench.json && cat artifacts/bench.json)
	$(BIN)/python scripts/readme_numbers.py snapshot artifacts/bench.json $(if $(findstring --quick,$(ARGS)),--quick)
	$(BIN)/python scripts/readme_numbers.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info

# One entry point. `make demo` and `make test` run `setup` first, so a fresh clone needs
# nothing else. `setup` is a stamp-file target: it reinstalls only when the pins change.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sdod-installed
STATE := .state
DEMO := $(STATE)/demo

.PHONY: setup demo test test-all lint format bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-r requirements.txt -c requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)
	@echo "setup: .venv ready"

demo: setup
	$(BIN)/python -m sdod make-sample-data --out $(DEMO)/bucket
	@echo "demo: sample dataset in $(DEMO)/bucket (SageMaker image format)"

test: setup
	$(BIN)/python -m pytest

test-all: setup
	$(BIN)/python -m pytest -m "" 

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	@ls bench/*.py >/dev/null 2>&1 || { echo "bench: no benchmarks yet"; exit 0; }
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(STATE) .pytest_cache .mypy_cache .ruff_cache

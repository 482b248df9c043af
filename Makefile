# One entry point. `make demo` and `make test` run `setup` first, so a fresh clone needs
# nothing else. `setup` is a stamp-file target: it reinstalls only when the pins change.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sdod-installed
STATE := .state
DEMO := $(STATE)/demo

.PHONY: setup demo airflow test test-all lint format bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-r requirements.txt -c requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)
	@echo "setup: .venv ready"

# Airflow for the demo and `make airflow`: SQLite home inside the ignored state folder.
AIRFLOW_ENV := AIRFLOW_HOME=$(abspath $(STATE))/airflow \
	AIRFLOW__CORE__DAGS_FOLDER=$(abspath dags) \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(abspath plugins) \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	SDOD_STATE_DIR=$(abspath $(STATE))

demo: setup
	@rm -rf $(STATE)/jobs $(DEMO)/output
	$(BIN)/python -m sdod make-sample-data --out $(DEMO)/bucket
	@test -f $(STATE)/airflow/airflow.db || $(AIRFLOW_ENV) $(BIN)/airflow db migrate >/dev/null
	$(AIRFLOW_ENV) $(BIN)/airflow dags test sdod_train > $(STATE)/demo-airflow.log 2>&1 || \
		{ tail -40 $(STATE)/demo-airflow.log; echo "demo: the DAG run failed (full log: $(STATE)/demo-airflow.log)"; exit 1; }
	@grep -E "validation mAP|sdod train:" $(STATE)/demo-airflow.log | sed -E 's/.*\] (#|sdod)/\1/; s/ \[airflow.*//' | tail -6
	@$(BIN)/python -m sdod inspect-model $(DEMO)/output/sdod-demo/output/model.tar.gz | head -3
	@echo "demo: published $(abspath $(DEMO))/output/sdod-demo/output/model.tar.gz (Airflow log: $(STATE)/demo-airflow.log)"

airflow: setup
	@test -f $(STATE)/airflow/airflow.db || $(AIRFLOW_ENV) $(BIN)/airflow db migrate >/dev/null
	PATH=$(abspath $(BIN)):$$PATH $(AIRFLOW_ENV) AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=8080 \
		AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:8080/execution/ \
		AIRFLOW__API__BASE_URL=http://127.0.0.1:8080 AIRFLOW__CORE__PARALLELISM=4 \
		AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True $(BIN)/airflow standalone

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

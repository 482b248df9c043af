# One entry point. `make demo` and `make test` run `setup` first, so a fresh clone needs
# nothing else. `setup` is a stamp-file target: it reinstalls only when the pins change.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sdod-installed
STATE := .state
DEMO := $(STATE)/demo

.PHONY: setup browser demo airflow test test-all lint format bench clean

setup: $(STAMP)

# The lock is complete, so nothing is resolved: tools/setup_venv.py installs its pins as
# written (uv, from the indexes pip is configured with; pip where uv cannot be had) and
# checks the result. requirements.txt is what the lock was resolved from.
$(STAMP): requirements.txt requirements.lock pyproject.toml tools/setup_venv.py
	$(PYTHON) tools/setup_venv.py $(VENV)
	@touch $(STAMP)

# Airflow for the demo and `make airflow`: SQLite home inside the ignored state folder.
AIRFLOW_ENV := AIRFLOW_HOME=$(abspath $(STATE))/airflow \
	AIRFLOW__CORE__DAGS_FOLDER=$(abspath dags) \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(abspath plugins) \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	SDOD_STATE_DIR=$(abspath $(STATE)) \
	SDOD_CACHE_DIR=$(abspath $(STATE))/cache

# The demo's progress: each task as it starts, the epoch lines as they come; the whole
# Airflow output stays in $(STATE)/demo-airflow.log.
DEMO_LOG := $(STATE)/demo-airflow.log
PROGRESS := sdod train:|validation mAP|Executing|Marking task|annotation check|resuming

# the demo publishes to its own registry (.state/demo/registry), not the default one
demo: setup
	@rm -rf $(STATE)/jobs $(STATE)/work $(STATE)/cache $(DEMO)/output $(DEMO)/registry
	$(BIN)/python -m sdod make-sample-data --out $(DEMO)/bucket
	@test -f $(STATE)/airflow/airflow.db || $(AIRFLOW_ENV) $(BIN)/airflow db migrate >/dev/null
	@echo "demo: airflow dags test sdod_train (full log: $(DEMO_LOG))"
	@{ PYTHONUNBUFFERED=1 $(AIRFLOW_ENV) SDOD_MODEL_REGISTRY_URI=$(abspath $(DEMO))/registry $(BIN)/airflow dags test sdod_train 2>&1; echo $$? > $(STATE)/demo.rc; } \
		| tee $(DEMO_LOG) | $(BIN)/python -u -m sdod.cli.progress
	@test "$$(cat $(STATE)/demo.rc)" = 0 && ! grep -q "state=failed\|DagRunState.FAILED" $(DEMO_LOG) || \
		{ tail -40 $(DEMO_LOG); echo "demo: the DAG run failed (full log: $(DEMO_LOG))"; exit 1; }
	@$(BIN)/python -m sdod inspect-model $(DEMO)/registry/sdod-demo/v1/
	@echo "demo: published registry version $(abspath $(DEMO))/registry/sdod-demo/v1/ (Airflow log: $(DEMO_LOG))"

airflow: setup
	@test -f $(STATE)/airflow/airflow.db || $(AIRFLOW_ENV) $(BIN)/airflow db migrate >/dev/null
	PATH=$(abspath $(BIN)):$$PATH $(AIRFLOW_ENV) AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=8080 \
		AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:8080/execution/ \
		AIRFLOW__API__BASE_URL=http://127.0.0.1:8080 AIRFLOW__CORE__PARALLELISM=4 \
		AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True $(BIN)/airflow standalone

# The UI test drives Debian's chromium (never a browser Playwright downloads): installed
# here when missing and this runs as root with apt; otherwise that one test says so.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			{ apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
			  { apt-get update >/dev/null 2>&1 && \
			    apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }; } && \
			echo "setup: installed Debian's chromium for the UI test"; \
		else echo "setup: no chromium: install Debian's chromium package for the UI test"; fi; }

test: setup browser
	$(BIN)/python -m pytest

test-all: setup browser
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
	@for b in bench/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(STATE) .pytest_cache .mypy_cache .ruff_cache

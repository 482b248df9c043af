"""DAG-integrity checks, shared by the tests for `dags/` and the checker's own tests.

Every DAG must import, carry tags and `doc_md`, retry at least twice, and its file must
parse in a fresh interpreter quickly without importing heavy libraries (the scheduler's
dag-processor re-parses DAG files all the time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY_MODULES = ("torch", "torchvision", "numpy", "pandas", "great_expectations")
MAX_PARSE_SECONDS = 0.3
MIN_RETRIES = 2

# Runs in a fresh interpreter: Airflow's own DAG-authoring API is imported first (a running
# dag-processor has it loaded already; `airflow.sdk` is lazy, so its names are touched),
# then only the DAG file is timed: what it costs on top of Airflow is ours.
_PROBE = """
import json, runpy, sys, time
sys.path.insert(0, sys.argv[2])
from airflow.sdk import DAG, Asset, BaseOperator, Param, TaskGroup, task  # noqa: F401
from airflow.sdk.exceptions import AirflowException  # noqa: F401
before = set(sys.modules)
start = time.perf_counter()
runpy.run_path(sys.argv[1], run_name="dag_probe")
seconds = time.perf_counter() - start
heavy = sorted(m for m in json.loads(sys.argv[3]) if m in sys.modules)
print(json.dumps({"seconds": seconds, "heavy": heavy}))
"""


def dag_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def parse_in_fresh_interpreter(dag_file: Path, plugins: Path) -> dict:
    """`{"seconds": float, "heavy": [modules]}` for one DAG file, in a new interpreter."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(dag_file), str(plugins), json.dumps(HEAVY_MODULES)],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def dag_problems(folder: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Import errors per file, and rule violations per DAG id, for every DAG in `folder`."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    problems: dict[str, list[str]] = {}
    for dag_id, dag in bag.dags.items():
        found = []
        if not dag.tags:
            found.append("no tags")
        if not (dag.doc_md or "").strip():
            found.append("no doc_md")
        for task in dag.tasks:
            if (task.retries or 0) < MIN_RETRIES:
                found.append(f"task {task.task_id} has retries={task.retries} < {MIN_RETRIES}")
        problems[dag_id] = found
    return dict(bag.import_errors), problems

"""Every DAG in dags/ imports, has tags, doc_md and retries >= 2, and parses light and fast.

The checker is itself tested on a good and a bad DAG folder, so these tests mean something
before and after the real DAGs arrive.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.dags.integrity import (
    MAX_PARSE_SECONDS,
    dag_files,
    dag_problems,
    parse_in_fresh_interpreter,
)

REPO = Path(__file__).resolve().parents[2]
DAGS, PLUGINS = REPO / "dags", REPO / "plugins"

GOOD = '''
"""A good DAG."""
from datetime import datetime
from airflow.sdk import DAG, task

with DAG("good", schedule=None, start_date=datetime(2026, 1, 1), tags=["sdod"],
         doc_md="Does one thing.", default_args={"retries": 2}):
    @task
    def step():
        import numpy  # heavy imports belong inside tasks
        return int(numpy.int64(1))
    step()
'''

BAD = """
import numpy  # parse-time cost
from datetime import datetime
from airflow.sdk import DAG, task

with DAG("bad", schedule=None, start_date=datetime(2026, 1, 1)):
    @task
    def step():
        return 1
    step()
"""

BROKEN = "from airflow.sdk import DAG\nraise RuntimeError('cannot import me')\n"


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dags")
    for name, text in (("good.py", GOOD), ("bad.py", BAD), ("broken.py", BROKEN)):
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def test_checker_flags_missing_tags_docs_retries_and_import_errors(sample_folder: Path) -> None:
    import_errors, problems = dag_problems(sample_folder)
    assert [Path(f).name for f in import_errors] == ["broken.py"]
    assert problems["good"] == []
    assert problems["bad"] == ["no tags", "no doc_md", "task step has retries=0 < 2"]


def test_checker_sees_heavy_imports_at_parse_time(sample_folder: Path) -> None:
    assert parse_in_fresh_interpreter(sample_folder / "good.py", PLUGINS)["heavy"] == []
    assert parse_in_fresh_interpreter(sample_folder / "bad.py", PLUGINS)["heavy"] == ["numpy"]


def test_project_dags_import_and_follow_the_rules() -> None:
    if not dag_files(DAGS):
        pytest.skip("no DAG files in dags/ yet")
    import_errors, problems = dag_problems(DAGS)
    assert import_errors == {}
    assert {dag_id: p for dag_id, p in problems.items() if p} == {}


@pytest.mark.parametrize("dag_file", dag_files(DAGS), ids=lambda p: p.name)
def test_project_dag_parses_fast_without_heavy_imports(dag_file: Path) -> None:
    probe = parse_in_fresh_interpreter(dag_file, PLUGINS)
    assert probe["heavy"] == []
    assert probe["seconds"] < MAX_PARSE_SECONDS, f"{dag_file.name} took {probe['seconds']:.3f}s"

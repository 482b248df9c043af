"""Test-wide settings: an isolated AIRFLOW_HOME, gpu auto-skip, and "0 passed" is a failure."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Airflow reads its home at import time: point it at a throw-away folder before any test
# imports airflow, so tests never touch ~/airflow.
REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="sdod-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# training slots of this test session only: a job running elsewhere on the machine (a
# `make demo`) must not hold up the tests, nor the tests it
os.environ["SDOD_SLOT_DIR"] = tempfile.mkdtemp(prefix="sdod-test-slots-")
# tests never download (ImageNet weights take the offline path or a local file they make)
os.environ["SDOD_NO_DOWNLOAD"] = "1"
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
# Airflow puts the plugins folder on sys.path: DAG files import the operators from there.
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
SHARED_FIXTURES = REPO / "tests" / "fixtures"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # the marker, not the keyword: a test under tests/gpu/ has "gpu" among its keywords
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (gpu marker); none on this machine")
    for item in gpu_items:
        item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run in which nothing passed is not a green run (everything skipped or deselected)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter else 0
    if exitstatus == pytest.ExitCode.OK and passed == 0 and not session.config.option.collectonly:
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO

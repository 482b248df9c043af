"""bench/demo_run.py reads the phases off `make demo`'s own progress lines: a change to
those lines that would break the measurement breaks this test instead."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

TRANSCRIPT = """\
python3.11 tools/setup_venv.py .venv
setup: .venv ready in 24 s
.venv/bin/python -m sdod make-sample-data --out .state/demo/bucket
wrote 960 train + 60 validation images (4517 boxes, 3 classes: a, b, c) in image-json format to x
demo: airflow dags test sdod_train (full log: .state/demo-airflow.log)
demo: build_spec ...
demo: build_spec ended (5 s)
demo: train ...
  #quality_metric: host=algo-1, epoch=0, validation mAP <score>=(0.08186)
demo: train ended (401 s)
demo: the DAG run ended: success
validation mAP: 0.9036 (best epoch 8)
demo: published registry version /x/registry/sdod-demo/v1/ (Airflow log: y)
"""


@pytest.fixture(scope="module")
def demo_run():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("demo_run", BENCH / "demo_run.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_phases_come_from_the_progress_lines(demo_run):
    stamps = [24, 24.5, 25, 60, 90, 100, 105, 106, 150, 507, 512, 517, 518]
    lines = list(zip(stamps, TRANSCRIPT.splitlines(), strict=True))
    assert demo_run.phases(lines) == {
        "setup": 24.5, "sample data": 35.5, "airflow database": 30,
        "dags test start-up": 10, "build_spec": 5, "train": 401, "report": 6, "total": 518,
    }  # fmt: skip
    assert demo_run.MAP.match(lines[11][1]).group(1) == "0.9036"

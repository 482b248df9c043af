"""Lanes share one study: trial numbers come from the storage, never exceed the budget,
and a lane that restarts (its task retried on another worker) fails the trial it lost."""

from __future__ import annotations

from pathlib import Path

from sdod.tune.search import TuningRun
from sdod.tune.spec import parse_tuning_request
from tests.unit.sdod.tune.test_spec import request


def _run(tmp_path: Path, jobs: int) -> TuningRun:
    raw = request(ResourceLimits={"MaxNumberOfTrainingJobs": jobs, "MaxParallelTrainingJobs": 2})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    return TuningRun(parse_tuning_request(raw), work=tmp_path, storage=storage, log=lambda _: None)


def test_two_lanes_never_take_more_than_the_budget(tmp_path: Path) -> None:
    a, b = _run(tmp_path, 3), _run(tmp_path, 3)  # two workers' lanes, one study
    taken = [x for x in (a._next(0), b._next(1), a._next(0), b._next(1)) if x is not None]
    assert [record.number for _, record in taken] == [1, 2, 3]
    assert [r.name.split("-")[-2] for r in a.records()] == ["001", "002", "003"]


def test_a_restarted_lane_fails_the_trial_its_lost_worker_was_running(tmp_path: Path) -> None:
    lost = _run(tmp_path, 1)
    _trial, record = lost._next(0) or (None, None)
    assert record is not None and lost.records()[0].status == "InProgress"
    retried = _run(tmp_path, 1)  # the lane's task again, on another worker
    assert retried.lane(0) == 0  # the budget (1) is spent: nothing new runs
    (only,) = retried.records()
    assert only.status == "Failed" and "worker running this trial was lost" in only.failure
    assert retried.describe()["TrainingJobStatusCounters"]["NonRetryableError"] == 1
    other = _run(tmp_path, 1)
    assert other._fail_orphans(1) == 0  # another lane's trials are not its own

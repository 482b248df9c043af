"""The CPUs a training process may use: its affinity, capped by a container's CPU quota
(cgroup v2 or v1), and how they are shared between processes, threads and workers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdod.train.cpus import compute_threads, usable_cpus
from sdod.train.distributed import World
from sdod.train.job import data_workers

AFFINITY = len(os.sched_getaffinity(0))


def _v2(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(text)
    return root


def _v1(root: Path, quota: int, period: int = 100000) -> Path:
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda r: _v2(r, "100000 100000\n"), 1),  # docker --cpus=1
        (lambda r: _v2(r, "150000 100000\n"), min(AFFINITY, 2)),  # 1.5 CPUs: rounded up
        (lambda r: _v2(r, "1 100000\n"), 1),  # a sliver still gets one
        (lambda r: _v2(r, "6400000 100000\n"), AFFINITY),  # a quota above the CPUs it may use
        (lambda r: _v2(r, "max 100000\n"), AFFINITY),  # no quota
        (lambda r: _v2(r, "garbage"), AFFINITY),  # unreadable: the affinity
        (lambda r: _v1(r, 100000), 1),
        (lambda r: _v1(r, -1), AFFINITY),  # v1's "no quota"
        (lambda r: r, AFFINITY),  # no cgroup files at all
    ],
)
def test_usable_cpus_is_the_affinity_capped_by_the_quota(tmp_path, make, expected) -> None:
    assert usable_cpus(make(tmp_path / "cgroup")) == expected


def test_threads_share_the_cpus_unless_omp_num_threads_says(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    root = _v2(tmp_path, "100000 100000")
    assert compute_threads(1, root) == 1
    assert compute_threads(1, tmp_path / "none") == AFFINITY
    assert compute_threads(4, tmp_path / "none") == max(1, AFFINITY // 4)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's (or torchrun's) choice stands
    assert compute_threads(1, root) is None


def test_data_workers_follow_the_usable_cpus(monkeypatch) -> None:
    monkeypatch.setattr("sdod.train.job.usable_cpus", lambda: 6)
    assert data_workers(World()) == 6
    assert data_workers(World(local_size=4)) == 1
    assert data_workers(World(), configured=0) == 0

"""The CPUs a training process may use, and how it shares them between its compute threads
and its data-loader workers.

"May use" is the CPUs it is allowed to run on (`sched_getaffinity`: taskset, a cpuset,
Kubernetes' static CPU manager) capped by a CPU quota (cgroup v2 `cpu.max`, v1
`cpu.cfs_quota_us`: `docker run --cpus`, a Kubernetes CPU limit), rounded up. torch sizes
its thread pool from the CPUs it sees, not from the quota: in a container limited to 2 of
a host's 16 CPUs it would start 16 threads that take turns on 2.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _quota(root: Path) -> float | None:
    """The CPU quota in CPUs, or None when there is none (or it cannot be read)."""
    try:
        text = (root / "cpu.max").read_text().split()  # cgroup v2: "<quota|max> <period>"
        return None if text[0] == "max" else int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v1: -1 when there is no quota
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus(root: Path = CGROUP) -> int:
    """The CPUs this process may use: its affinity, capped by its cgroup's CPU quota."""
    cpus = len(os.sched_getaffinity(0))
    quota = _quota(root)
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def compute_threads(local_processes: int, root: Path = CGROUP) -> int | None:
    """torch's intra-op threads for each of this machine's `local_processes` training
    processes: the usable CPUs shared out; None where OMP_NUM_THREADS already says (the
    user's choice, or torchrun's for several processes)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, usable_cpus(root) // max(1, local_processes))

"""Training slots: how many training jobs may run on this machine at once (default 1: a
job owns the machine's GPUs), and `StoppingCondition.MaxWaitTimeInSeconds`, which bounds
the time a job waits for a free slot as it bounds a SageMaker job's wait for capacity.

A slot is an exclusive `flock` on `<SDOD_SLOT_DIR>/slot-<i>.lock` (default: `sdod-slots`
in the system's temporary folder), held by the `sdod train` process for the whole job and
released by the kernel when it exits, however it exits. `SDOD_TRAINING_SLOTS=N` allows N
jobs at once (e.g. one per GPU when each job is given its own `CUDA_VISIBLE_DEVICES`).
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sdod.errors import UserError
from sdod.settings import RuntimeSettings

POLL_SECONDS = 0.25


class WaitTimeout(Exception):
    """No slot came free within MaxWaitTimeInSeconds (or the job was stopped waiting)."""


def open_lock_file(path: Path) -> int:
    """The slot's lock file, opened without following a symbolic link (the folder may be a
    shared temporary one: a link planted there must not make us truncate its target)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:  # ELOOP: a symbolic link; EACCES: someone else's file
        raise UserError(
            f"training slot lock {path} cannot be opened safely ({exc.strerror}); it must be "
            "a regular file of this user: remove it, or set SDOD_SLOT_DIR to a private folder"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(
            f"training slot lock {path} is not a regular file; remove it, or set SDOD_SLOT_DIR"
        )
    return fd


def _try_lock(path: Path) -> int | None:
    fd = open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _holders(folder: Path, count: int) -> str:
    found = []
    for i in range(count):
        try:
            found.append((folder / f"slot-{i}.lock").read_text().strip())
        except OSError:
            continue
    return "; ".join(h for h in found if h) or "unknown"


def _claim(folder: Path, count: int, job: str) -> int | None:
    """The lock of the first free slot, with this process and `job` written in it for
    whoever waits; None when every slot is held."""
    for i in range(count):
        fd = _try_lock(folder / f"slot-{i}.lock")
        if fd is not None:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}, job {job}\n".encode())
            return fd
    return None


@contextmanager
def training_slot(
    job: str,
    *,
    max_wait: float | None,
    log: Callable[[str], None],
    should_stop: Callable[[], bool] = lambda: False,
    slots: int = 1,
    folder: Path | None = None,
) -> Iterator[float]:
    """Hold a training slot for the body; yields the seconds spent waiting for it.

    Raises WaitTimeout when `max_wait` seconds pass first, or when `should_stop()` turns
    true while waiting. `slots` and `folder`: `RuntimeSettings.training_slots` and
    `.slot_dir` (SDOD_TRAINING_SLOTS, SDOD_SLOT_DIR)."""
    folder = folder or RuntimeSettings().slot_dir
    folder.mkdir(parents=True, exist_ok=True)
    count = slots
    started, announced, fd = time.monotonic(), False, None
    while fd is None:
        fd = _claim(folder, count, job)
        if fd is not None:
            break
        waited = time.monotonic() - started
        if not announced:
            log(
                f"waiting for a free training slot on this machine (held by: "
                f"{_holders(folder, count)}); SDOD_TRAINING_SLOTS={count}"
                + (f", MaxWaitTimeInSeconds={max_wait:g}" if max_wait is not None else "")
            )
            announced = True
        if should_stop():
            raise WaitTimeout(f"stopped after waiting {waited:.0f} s for a training slot")
        if max_wait is not None and waited >= max_wait:
            raise WaitTimeout(
                f"StoppingCondition.MaxWaitTimeInSeconds={max_wait:g} passed while waiting for "
                f"a training slot (held by: {_holders(folder, count)}); the job did not start. "
                "Raise MaxWaitTimeInSeconds, or SDOD_TRAINING_SLOTS to run more jobs at once"
            )
        time.sleep(POLL_SECONDS)
    waited = time.monotonic() - started
    if announced:
        log(f"got a training slot after {waited:.1f} s")
    try:
        yield waited
    finally:
        os.close(fd)  # releases the lock

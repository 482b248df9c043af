"""StoppingCondition inside the job: SIGTERM or the MaxRuntimeInSeconds deadline set a flag
that the loop checks at every step boundary; the job then saves a complete artifact.

A second SIGTERM while saving does not interrupt the save (the handler only sets the flag).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import TypeVar

T = TypeVar("T")


class StopFlag:
    """Set by SIGTERM/SIGINT or by the deadline; `reason` says which."""

    def __init__(
        self, max_runtime_seconds: float | None = None, *, start: float | None = None
    ) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.start = time.monotonic() if start is None else start
        self.deadline = self.start + max_runtime_seconds if max_runtime_seconds else None

    def set_max_runtime(self, seconds: float) -> None:
        """Set the deadline, counted from when this flag was made (the job's start)."""
        self.deadline = self.start + seconds

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        if (
            not self._event.is_set()
            and self.deadline is not None
            and time.monotonic() >= self.deadline
        ):
            self.set("MaxRuntimeInSeconds reached")
        return self._event.is_set()

    def install_signal_handlers(self) -> None:
        """SIGTERM (what SageMaker and the operator send) and SIGINT request a stop."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.set(f"received {signal.Signals(signum).name}")

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """`worker_init_fn` for data-loader workers: SIGTERM/SIGINT sent to the whole process
    group (the operator, Ctrl-C, `kill -- -PGID`) must stop the job at a step boundary, not
    kill its workers under it (the loader would then fail the job). The main process shuts
    the workers down; they still exit if it dies. See `end_workers_at_exit`.

    Workers are forked with SIGTERM/SIGINT blocked (`iter_with_stop_signals_blocked`), so
    one that arrives before this runs waits, and is dropped here."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def iter_with_stop_signals_blocked(loader: Iterable[T]) -> Iterator[T]:
    """`iter(loader)` with SIGTERM/SIGINT held back while it forks its workers: torch's
    worker start-up installs a SIGTERM handler that kills the worker, and
    `ignore_stop_signals` only runs after it; a group SIGTERM in between would kill one.
    The main process gets any held signal as soon as the workers exist."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


_exit_hook = False


def end_workers_at_exit() -> None:
    """At interpreter exit multiprocessing `terminate()`s daemonic children (SIGTERM, which
    loader workers ignore) and then joins them, which would wait forever when a loader's
    workers are still alive. This hook, registered after multiprocessing's and so run
    before it, ends them with SIGKILL first. Idempotent."""
    global _exit_hook
    if not _exit_hook:
        atexit.register(_kill_daemonic_children)
        _exit_hook = True


def _kill_daemonic_children() -> None:
    import multiprocessing

    for child in multiprocessing.active_children():
        if child.daemon and child.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)

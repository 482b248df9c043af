"""Fault injection for tests of stopping: pause a job at a named point so that a test can
send it a signal exactly there. Inert unless `SDOD_PAUSE_AT` is set."""

from __future__ import annotations

import os
import time

PAUSE_ENV = "SDOD_PAUSE_AT"


def pause_point(name: str) -> None:
    """A fault-injection point for tests of stopping: with `SDOD_PAUSE_AT=<name>:<marker>`,
    the first process to reach point `name` creates the file `<marker>` (holding its pid)
    and sleeps `SDOD_PAUSE_SECONDS` (default 3) so a test can signal the job exactly there.
    Points: `data` (a loader worker building a batch), `forward`, `validation`,
    `checkpoint` (between writing the temporary file and renaming it). Unset: no cost
    beyond one environment lookup."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    point, _, marker = spec.partition(":")
    if point != name or not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # only the first comer
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(float(os.environ.get("SDOD_PAUSE_SECONDS", "3")))

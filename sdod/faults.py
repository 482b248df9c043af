"""Fault injection for tests: pause a job at a named point so that a test can send it a
signal exactly there (`SDOD_PAUSE_AT`), or make the first job to reach it fail
(`SDOD_FAIL_AT`, e.g. one trial of a tuning job). Inert unless one of them is set."""

from __future__ import annotations

import os
import time

PAUSE_ENV = "SDOD_PAUSE_AT"
FAIL_ENV = "SDOD_FAIL_AT"


def _first_at(env: str, name: str) -> bool:
    """`<env>=<name>:<marker>`: True for the first process to reach `name` (it creates the
    file `<marker>`, holding its pid), False for every other and when unset."""
    spec = os.environ.get(env)
    if not spec:
        return False
    point, _, marker = spec.partition(":")
    if point != name or not marker:
        return False
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # only the first comer
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def pause_point(name: str) -> None:
    """A fault-injection point for tests of stopping: with `SDOD_PAUSE_AT=<name>:<marker>`,
    the first process to reach point `name` creates the file `<marker>` (holding its pid)
    and sleeps `SDOD_PAUSE_SECONDS` (default 3) so a test can signal the job exactly there.
    Points: `data` (a loader worker building a batch), `forward`, `validation`,
    `checkpoint` (between writing the temporary file and renaming it). With
    `SDOD_FAIL_AT=<name>:<marker>` the first comer raises instead. Unset: no cost beyond
    two environment lookups."""
    if _first_at(FAIL_ENV, name):
        raise RuntimeError(f"injected failure at {name} ({FAIL_ENV})")
    if _first_at(PAUSE_ENV, name):
        time.sleep(float(os.environ.get("SDOD_PAUSE_SECONDS", "3")))

"""`make demo`'s progress: read `airflow dags test` output on stdin, print each task as it
starts and ends, the training job's metric and outcome lines, errors, and the run's end.

    airflow dags test sdod_train 2>&1 | tee run.log | python -m sdod.cli.progress
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime

STARTING = re.compile(r"\[DAG TEST\] starting task_id=(?:\w+\.)?(\S+)")
ENDING = re.compile(r"\[DAG TEST\] end task task_id=(?:\w+\.)?(\S+)")
FINISHED = re.compile(r"DagRun Finished: .*state=(\w+)")
SDOD = re.compile(
    r"\] (#quality_metric: .*validation mAP.*?|sdod train: .*?|resuming from .*?)\s+\["
)
ERROR = re.compile(r"\[error\s*\]\s*(.*?)\s+\[")


def _stamp(line: str) -> datetime | None:
    """The ISO time Airflow's log lines start with."""
    try:
        return datetime.fromisoformat(line.split(" ", 1)[0])
    except ValueError:
        return None


def progress(lines: Iterable[str]) -> Iterator[str]:
    """The lines worth showing, reworded for a person watching."""
    started: dict[str, datetime | None] = {}
    for line in lines:
        if m := STARTING.search(line):
            started[m.group(1)] = _stamp(line)
            yield f"demo: {m.group(1)} ..."
        elif m := ENDING.search(line):
            begin, end = started.get(m.group(1)), _stamp(line)
            took = f" ({(end - begin).total_seconds():.0f} s)" if begin and end else ""
            yield f"demo: {m.group(1)} ended{took}"
        elif m := SDOD.search(line):
            yield f"  {m.group(1)}"
        elif m := ERROR.search(line):
            yield f"  error: {m.group(1)[:300]}"
        elif m := FINISHED.search(line):
            yield f"demo: the DAG run ended: {m.group(1)}"


def main() -> int:
    for shown in progress(sys.stdin):
        print(shown, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

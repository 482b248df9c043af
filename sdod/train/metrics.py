"""Metric log lines in the form of SageMaker's built-in algorithms, and their parser.

Users' existing `MetricDefinitions` regexes keep working, e.g.
`#quality_metric: host=algo-1, epoch=3, validation mAP <score>=(0.71)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HOST = "algo-1"


def train_loss_line(epoch: int, batch: int, name: str, value: float, host: str = HOST) -> str:
    return (
        f"#quality_metric: host={host}, epoch={epoch}, batch={batch} train {name} <loss>=({value})"
    )


def validation_map_line(epoch: int, value: float, host: str = HOST) -> str:
    return f"#quality_metric: host={host}, epoch={epoch}, validation mAP <score>=({value})"


def progress_line(percent: float, host: str = HOST) -> str:
    return f"#progress_metric: host={host}, completed {percent:g} %"


def throughput_line(records_per_second: float, host: str = HOST) -> str:
    return f"#throughput_metric: host={host}, train throughput={records_per_second} records/second"


_PATTERNS = {
    "train:cross_entropy": re.compile(
        r"epoch=(\d+), batch=(\d+) train cross_entropy <loss>=\(([^)]+)\)"
    ),
    "train:smooth_l1": re.compile(r"epoch=(\d+), batch=(\d+) train smooth_l1 <loss>=\(([^)]+)\)"),
    "validation:mAP": re.compile(r"epoch=(\d+), validation mAP <score>=\(([^)]+)\)"),
    "train:throughput": re.compile(r"train throughput=([0-9.eE+-]+) records/second"),
    "progress": re.compile(r"#progress_metric: host=\S+, completed ([0-9.]+) %"),
}


@dataclass(frozen=True)
class MetricPoint:
    name: str
    value: float
    epoch: int | None = None


def parse_metric_line(line: str) -> MetricPoint | None:
    """The metric a log line carries, or None (used by the Airflow operator for XCom)."""
    if "_metric: host=" not in line:
        return None
    for name, pattern in _PATTERNS.items():
        m = pattern.search(line)
        if m:
            groups = m.groups()
            epoch = int(groups[0]) if len(groups) > 1 else None
            return MetricPoint(name, float(groups[-1]), epoch)
    return None

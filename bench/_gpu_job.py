"""What one end-to-end job of bench/gpu_check.sh measured, from its own log and nvidia-smi.

The log's lines carry the time they were read (`<epoch seconds> <line>`, gpu_check.sh's
`stamp`); the job's metric lines are SageMaker's (`sdod.train.metrics`). nvidia-smi's CSV
rows are `timestamp, utilization.gpu, memory.used` (local time, %, MiB), every 250 ms.
"""

from __future__ import annotations

import statistics
from datetime import datetime
from pathlib import Path

from sdod.train.metrics import parse_metric_line


def read_log(path: Path) -> list[tuple[float, str]]:
    """(time, text) per line; lines without a time are given the previous line's."""
    lines: list[tuple[float, str]] = []
    for raw in path.read_text(errors="replace").splitlines():
        stamp, _, text = raw.partition(" ")
        try:
            lines.append((float(stamp), text))
        except ValueError:
            lines.append((lines[-1][0] if lines else 0.0, raw))
    return lines


def read_smi(path: Path) -> list[tuple[float, float, float]]:
    """(time, GPU utilisation %, memory used MiB) per nvidia-smi sample; [] without one."""
    samples: list[tuple[float, float, float]] = []
    if not path.is_file():
        return samples
    for row in path.read_text(errors="replace").splitlines():
        parts = [p.strip() for p in row.split(",")]
        try:
            when = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((when, float(parts[1]), float(parts[2])))
        except (ValueError, IndexError):
            continue  # a header, a cut-off last row, "[N/A]"
    return samples


def _util(samples: list[tuple[float, float, float]], start: float, end: float) -> float | None:
    inside = [util for when, util, _ in samples if start <= when <= end]
    return round(statistics.fmean(inside), 1) if inside else None


def _epochs(lines: list[tuple[float, str]], samples: list) -> list[dict]:
    """Per epoch: its throughput line, validation mAP and GPU utilisation while it trained
    (from the end of the previous epoch's validation, or the start of training)."""
    epochs: list[dict] = []
    start = next((t for t, text in lines if text.startswith("training ")), None)
    for when, text in lines:
        point = parse_metric_line(text)
        if point is None:
            continue
        if point.name == "train:throughput":
            begin = start if start is not None else when
            epochs.append(
                {
                    "epoch": len(epochs),
                    "img_per_s": point.value,
                    "seconds": round(when - begin, 2),
                    "gpu_util_mean": _util(samples, begin, when),
                }
            )
            start = when
        elif point.name == "validation:mAP" and epochs:
            epochs[-1]["validation_map"] = point.value
            start = when
    return epochs


def _loss(lines: list[tuple[float, str]]) -> dict:
    """The logged training losses (cross-entropy + smooth L1) and whether they fell: the
    last epoch's mean below the first epoch's."""
    parts: dict[tuple[int, int], float] = {}
    order: list[tuple[int, int]] = []
    for _, text in lines:
        point = parse_metric_line(text)
        if point is None or point.name not in ("train:cross_entropy", "train:smooth_l1"):
            continue
        batch = int(text.split("batch=")[1].split(" ")[0])
        key = (point.epoch or 0, batch)
        if key not in parts:
            order.append(key)
        parts[key] = parts.get(key, 0.0) + point.value
    if not order:
        return {"logged": 0, "fell": None}
    means = {}
    for epoch in sorted({e for e, _ in order}):
        means[epoch] = round(statistics.fmean(parts[k] for k in order if k[0] == epoch), 4)
    first, last = min(means), max(means)
    return {
        "logged": len(order),
        "first": round(parts[order[0]], 4),
        "last": round(parts[order[-1]], 4),
        "epoch_means": {str(e): v for e, v in means.items()},
        "fell": means[last] < means[first] if last != first else parts[order[-1]] < parts[order[0]],
    }


def job_report(name: str, log: Path, smi: Path, rc: int, predict_rc: int) -> dict:
    """The job's figures: images/s per epoch (the last is the steady one), GPU utilisation
    while training, peak GPU memory, the loss, and whether the artifact loaded."""
    lines = read_log(log) if log.is_file() else []
    samples = read_smi(smi)
    epochs = _epochs(lines, samples)
    train_start = next((t for t, text in lines if text.startswith("training ")), None)
    train_end = max((t for t, text in lines if "train throughput=" in text), default=None)
    training = _util(samples, train_start, train_end) if train_start and train_end else None
    return {
        "name": name,
        "rc": rc,
        "predict_rc": predict_rc,
        "artifact_loads": predict_rc == 0,
        "seconds": round(lines[-1][0] - lines[0][0], 1) if lines else None,
        "img_per_s": epochs[-1]["img_per_s"] if epochs else None,
        "epochs": epochs,
        "gpu_util_mean": training,
        "peak_memory_mib": max((m for _, _, m in samples), default=None),
        "loss": _loss(lines),
        "smi_samples": len(samples),
        "samples": [[round(t, 2), u, m] for t, u, m in samples],
        "log_tail": [text for _, text in lines[-40:]],
    }

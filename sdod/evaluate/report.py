"""What `sdod evaluate --out` writes next to metrics.json: the per-class table and the
pictures."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from sdod.evaluate import plots
from sdod.storage import atomic_write_bytes


def write_files(
    folder: Path,
    per_class: dict[str, float | None],
    voc: Any,
    det: Any,
    samples: list[Any],
    names: list[str],
    examples: int,
) -> list[str]:
    """`per_class_ap.csv`, a PR curve per class (`pr_curves/`), and the first `examples`
    images with true and predicted boxes (`examples/`); returns the paths written."""

    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["class_id", "class_name", "ap", "ground_truth", "detections"])
    for c, name in enumerate(names):
        counts = voc.counts.get(c)
        ap = per_class.get(name)
        writer.writerow(
            [
                c,
                name,
                "" if ap is None else f"{ap:.6f}",
                counts.n_pos if counts else 0,
                counts.n_det if counts else 0,
            ]
        )
    written = [str(atomic_write_bytes(folder / "per_class_ap.csv", table.getvalue().encode()))]
    for c, name in enumerate(names):
        if c in voc.recall:
            voc_ap = voc.ap.get(c, float("nan"))
            shown = "n/a" if voc_ap != voc_ap else f"{voc_ap:.3f}"
            title = f"{name}: AP {shown} ({voc.metric} @ IoU {voc.iou_threshold})"
            png = folder / "pr_curves" / f"{c:03d}_{plots.safe_name(name)}.png"
            written.append(str(plots.pr_curve(voc.recall[c], voc.precision[c], title, png)))
    for i, sample in enumerate(samples[: max(examples, 0)]):
        png = folder / "examples" / f"{plots.safe_name(sample.key)}.png"
        written.append(str(plots.example(sample, det, i, names, png)))
    return written

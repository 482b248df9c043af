"""A model's detections on a dataset, scored, with its files.

The model may be a local archive, an object URI or a registry version; the data set is
local (`sdod.pipeline.evaluate` brings a `.rec` from the object store); `out` may be a
folder or a prefix in the object store (the files are written locally, then uploaded).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdod.errors import UserError
from sdod.storage import S3Options, atomic_write_json, is_s3, join_uri
from sdod.transfer import upload_tree

if TYPE_CHECKING:
    from sdod.data.sample import Sample
    from sdod.evaluate.voc import BoxTable
    from sdod.serve.predictor import Predictor

METRICS = ("voc07", "voc", "coco")


@dataclass(frozen=True)
class EvaluateResult:
    metric: str
    overlap_threshold: float
    images: int
    mAP: float | None
    per_class: dict[str, float | None]
    metrics_file: str | None = None  # URI of metrics.json under `out`
    coco: dict[str, float | None] | None = None  # AP, AP50, AP75, by size, AR (metric coco)
    plots: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _samples(
    rec: str | None,
    images: str | None,
    annotations: str | None,
    manifest: str | None,
) -> list[Any]:
    if rec:
        from sdod.data.rec_samples import read_rec

        if is_s3(rec):  # the stage brings it to this machine (sdod.pipeline.evaluate)
            raise UserError(f"{rec}: a .rec to score must be a local file; fetch it first")
        return read_rec(rec).samples
    from sdod.data.channels import samples_from_paths

    return samples_from_paths(images=images, annotations=annotations, manifest=manifest)[0].samples


def evaluate(
    *,
    model: str,
    images: str | None = None,
    annotations: str | None = None,
    manifest: str | None = None,
    rec: str | None = None,
    metric: str = "voc07",
    overlap_threshold: float | None = None,
    out: str | None = None,
    examples: int = 4,
    slicing: Any = None,
    s3: S3Options | None = None,
) -> EvaluateResult:
    """mAP of `model` on a dataset; with `slicing` (`sdod.serve.slicing.Slicing`) each
    image is predicted tile by tile, as `serve`/`predict` do for large images."""
    from sdod.evaluate.detect import ground_truth
    from sdod.evaluate.score import summary
    from sdod.evaluate.voc import voc_map
    from sdod.registry import resolve_model
    from sdod.serve.predictor import Predictor

    if metric not in METRICS:
        raise UserError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    predictor = Predictor.load(resolve_model(model, s3=s3))
    samples = _samples(rec, images, annotations, manifest)
    iou = overlap_threshold
    if iou is None:
        iou = float(predictor.hyperparams.get("overlap_threshold", 0.5))
    if not 0 < iou <= 1:
        raise UserError(f"--overlap-threshold must be in (0, 1], got {iou}")
    info = predictor.info
    det = _detections(predictor, samples, slicing)
    gt = ground_truth(samples)
    names = info.names()
    voc_metric = metric if metric != "coco" else "voc07"
    voc = voc_map(det, gt, num_classes=info.num_classes, iou_threshold=iou, metric=voc_metric)
    s, coco = summary(voc, names), None
    if metric == "coco":
        s, coco = _coco_summary(det, gt, samples, info.num_classes, names)
    path, plots = _write_report(out, s, voc, det, samples, names, examples, s3)
    return EvaluateResult(metric, iou, len(samples), s["mAP"], s["per_class"], path, coco, plots)


def _detections(predictor: Predictor, samples: list[Sample], slicing: Any) -> BoxTable:
    """The model's detections on every sample: whole images on the CPU, or tile by tile
    with `slicing`."""
    import torch

    from sdod.evaluate.detect import detect, detect_sliced

    if slicing is not None:
        return detect_sliced(predictor, samples, slicing)
    info = predictor.info
    found = detect(
        predictor.model, samples, device=torch.device("cpu"),
        nms_threshold=info.nms_threshold, nms_topk=info.nms_topk,
    )  # fmt: skip
    assert found is not None
    return found


def _coco_summary(
    det: Any, gt: Any, samples: list[Sample], num_classes: int, names: list[str]
) -> tuple[dict, dict]:
    """COCO's AP@[.5:.95] (faster-coco-eval) as the summary, and its 12 stats."""
    from sdod.evaluate.coco import coco_map

    sizes = [(smp.width, smp.height) for smp in samples]
    result = coco_map(det, gt, sizes, num_classes)
    summary = {
        "metric": "coco",
        "iou_threshold": "0.50:0.95",
        "per_class": {names[c]: ap for c, ap in result.ap.items()},
        "mAP": result.map,
        "coco": result.stats,
    }
    return summary, result.stats


def _write_report(
    out: str | None,
    summary: dict,
    voc: Any,
    det: Any,
    samples: list[Sample],
    names: list[str],
    examples: int,
    s3: S3Options | None,
) -> tuple[str | None, list[str]]:
    """metrics.json, the per-class table and the plots in `out` (a folder or a prefix):
    where metrics.json and the plots are, or nothing without `out`."""
    from sdod.evaluate.report import write_files

    if not out:
        return None, []
    remote = is_s3(out) or out.startswith("file://")
    with tempfile.TemporaryDirectory(prefix="sdod-evaluate-") as tmp:
        folder = Path(tmp) if remote else Path(out)
        atomic_write_json(folder / "metrics.json", {**summary, "images": len(samples)})
        written = write_files(folder, summary["per_class"], voc, det, samples, names, examples)
        if not remote:
            return str(folder / "metrics.json"), written
        upload_tree(folder, out, s3=s3)
        plots = [join_uri(out, str(Path(p).relative_to(folder))) for p in written]
        return join_uri(out, "metrics.json"), plots

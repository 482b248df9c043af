"""`sdod make-sample-data`: the synthetic dataset written in SageMaker's input layouts."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from sdod.data.imagejson import write_image_json
from sdod.data.manifest import write_manifest
from sdod.data.sample import Sample, SampleSet
from sdod.demo.scenes import CLASS_NAMES, MAX_CLASSES, generate_split
from sdod.errors import UserError

FORMATS = ("image-json", "manifest")
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class SampleDataResult:
    out: str
    format: str
    num_classes: int
    class_names: list[str]
    images: dict[str, int]
    boxes: dict[str, int]
    channels: dict[str, str]

    def to_dict(self) -> dict:
        return asdict(self)


def _write_split(
    root: Path, split: str, split_id: int, count: int, *, seed: int, num_classes: int
) -> SampleSet:
    images_dir = root / split
    images_dir.mkdir(parents=True)
    samples: list[Sample] = []
    progress = tqdm(total=count, desc=f"make-sample-data {split}", unit="img", disable=None)
    for generated in generate_split(seed, split_id, count, num_classes, split):
        path = images_dir / generated.sample.image
        path.write_bytes(generated.jpeg)
        generated.sample.image = str(path)
        samples.append(generated.sample)
        progress.update()
    progress.close()
    return SampleSet(samples, dict(enumerate(CLASS_NAMES[:num_classes])))


def _channels(fmt: str) -> dict[str, str]:
    if fmt == "image-json":
        return {name: f"{name}/" for name in (*SPLITS, *(f"{s}_annotation" for s in SPLITS))}
    return {
        **{s: f"{s}.manifest" for s in SPLITS},
        **{f"{s}_images": f"{s}/" for s in SPLITS},
    }


def _check_arguments(fmt: str, train: int, validation: int, num_classes: int) -> None:
    """UserError naming the command-line option that is out of range."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if not 1 <= num_classes <= MAX_CLASSES:
        raise UserError(f"--classes must be between 1 and {MAX_CLASSES}, got {num_classes}")
    if train < 1 or validation < 1:
        raise UserError("--train and --validation must each be at least 1 image")


def _write_labels(
    sampleset: SampleSet, root: Path, split: str, fmt: str, source_ref_prefix: str
) -> None:
    """A split's annotations in `fmt`: one JSON file per image, or one manifest."""
    if fmt == "image-json":
        write_image_json(sampleset, root / split, root / f"{split}_annotation")
    else:
        refs = [f"{source_ref_prefix}{split}/{Path(s.image).name}" for s in sampleset.samples]
        write_manifest(sampleset, root / f"{split}.manifest", source_refs=refs)


def _replace_outputs(staging: Path, out: Path) -> None:
    """Move everything in `staging` into `out`, replacing what is there by the same name."""
    for entry in sorted(staging.iterdir()):
        target = out / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        entry.replace(target)


def make_sample_data(
    out: str | Path,
    *,
    fmt: str = "image-json",
    train: int = 960,
    validation: int = 60,
    num_classes: int = 3,
    seed: int = 0,
    source_ref_prefix: str = "",
) -> SampleDataResult:
    """Write a train and a validation split under `out` in SageMaker's layout `fmt`.

    image-json: `train/`, `train_annotation/`, `validation/`, `validation_annotation/`.
    manifest: `train/`, `validation/` (images) and `train.manifest`, `validation.manifest`
    whose `source-ref`s are `<source_ref_prefix><split>/<file>` (relative to the manifest
    when the prefix is empty; give e.g. `s3://bucket/data/` for the place you upload to).
    The output is replaced as a whole, so a re-run never leaves stale files behind.
    """
    _check_arguments(fmt, train, validation, num_classes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"train": train, "validation": validation}
    boxes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix=".sample-data-", dir=out) as tmp:
        staging = Path(tmp)
        for split_id, split in enumerate(SPLITS):
            sampleset = _write_split(
                staging, split, split_id, counts[split], seed=seed, num_classes=num_classes
            )
            boxes[split] = sampleset.num_boxes
            _write_labels(sampleset, staging, split, fmt, source_ref_prefix)
        _replace_outputs(staging, out)
    return SampleDataResult(
        out=str(out),
        format=fmt,
        num_classes=num_classes,
        class_names=list(CLASS_NAMES[:num_classes]),
        images=counts,
        boxes=boxes,
        channels=_channels(fmt),
    )

"""SageMaker augmented manifest: JSON Lines with `source-ref` and a bounding-box attribute.

```
{"source-ref": "s3://bucket/image1.jpg",
 "bounding-box": {"image_size": [...], "annotations": [...]},
 "bounding-box-metadata": {"class-map": {"0": "dog"}, "type": "groundtruth/object_detection"}}
```
`AttributeNames` lists `source-ref` first and then the label attribute, as SageMaker requires.
A relative `source-ref` (an sdod extension) is resolved against the manifest's folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from sdod.data.annotation import ParsedAnnotation, annotation_object, parse_annotation
from sdod.data.problems import Problems
from sdod.data.sample import Sample, SampleSet
from sdod.errors import DataError, UserError
from sdod.storage import atomic_write_bytes

DEFAULT_ATTRIBUTES = ("source-ref", "bounding-box")


def check_attribute_names(attribute_names: Sequence[str]) -> str:
    """Validate `AttributeNames` and return the label attribute's name."""
    names = list(attribute_names)
    if len(names) != 2 or names[0] != "source-ref" or names[1] == "source-ref":
        raise UserError(
            f"AttributeNames {names} is not valid for object detection: list exactly two "
            "attributes, 'source-ref' first and then the label attribute, e.g. "
            "['source-ref', 'bounding-box'] (order matters, as in SageMaker)"
        )
    return names[1]


def _image_location(ref: object, manifest: Path, where: str, base: str | None = None) -> str:
    if not isinstance(ref, str) or not ref or "\0" in ref:
        shown = repr(ref)[:200]
        raise DataError(f"{where}: 'source-ref' must be a non-empty string, got {shown}")
    if ref.startswith("s3://"):
        return ref
    if ref.startswith("file://"):
        return ref[len("file://") :]
    if "://" in ref:
        raise DataError(f"{where}: 'source-ref' {ref!r} uses an unsupported scheme")
    if Path(ref).is_absolute():
        return ref
    if base is not None:  # the manifest's own location (an S3 prefix in Pipe mode)
        return base.rstrip("/") + "/" + ref
    return str(manifest.parent / ref)


def _class_map(meta: Any, where: str) -> dict[int, str]:
    if meta is None:
        return {}
    cmap = meta.get("class-map", {}) if isinstance(meta, dict) else None
    if not isinstance(cmap, dict):
        raise DataError(f"{where}: metadata 'class-map' must be an object of id -> name")
    try:
        return {int(k): str(v) for k, v in cmap.items()}
    except ValueError as exc:
        raise DataError(f"{where}: class-map keys must be integer class ids ({exc})") from exc


def _parse_line(
    raw: bytes, where: str, label_attr: str, manifest: Path, base: str | None
) -> tuple[str, ParsedAnnotation, dict[int, str]]:
    """One manifest line: its image, its annotation and its class names; DataError if bad."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: each line must be a JSON object")
    if label_attr not in obj:
        raise DataError(
            f"{where}: no label attribute {label_attr!r} (the second of AttributeNames; "
            f"the line has {list(obj)[:20]})"
        )
    image = _image_location(obj.get("source-ref"), manifest, where, base)
    parsed = parse_annotation(obj[label_attr], where)
    return image, parsed, _class_map(obj.get(f"{label_attr}-metadata"), where)


def read_manifest(
    path: str | Path,
    attribute_names: Sequence[str] = DEFAULT_ATTRIBUTES,
    *,
    strict: bool = True,
    base: str | None = None,
) -> SampleSet:
    """Read an augmented manifest into Samples; DataError names every bad line.

    `strict=False` skips bad lines instead and lists them in `SampleSet.problems`, so the
    annotation gate reports (or quarantines) them with the rest. `base`: where relative
    `source-ref`s live when not next to `path` (the S3 prefix of a streamed manifest)."""
    path = Path(path)
    label_attr = check_attribute_names(attribute_names)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist")
    problems = Problems(f"manifest {path}")
    samples: list[Sample] = []
    categories: dict[int, str] = {}
    seen: dict[str, int] = {}
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                image, parsed, names = _parse_line(raw, where, label_attr, path, base)
            except DataError as exc:
                problems.add_error(exc, where, exc.rule or "annotation_valid")
                continue
            categories.update(names)
            if image in seen:
                problems.add(
                    where, f"image {image} already listed on line {seen[image]}", "unique_keys"
                )
                continue
            seen[image] = lineno
            key = PurePosixPath(image).stem
            samples.append(
                Sample(key, image, parsed.width, parsed.height, parsed.boxes, parsed.labels)
            )
    if strict:
        problems.raise_if_any()
    if not samples and not problems:
        raise DataError(f"manifest {path} has no records")
    return SampleSet(samples, categories, problems.records)


def manifest_line(
    sample: Sample, source_ref: str, categories: dict[int, str], label_attr: str = "bounding-box"
) -> str:
    """One JSON line for `sample`, with the class-map restricted to the classes it holds."""
    present = sorted(set(sample.labels.tolist()))
    meta = {
        "class-map": {str(c): categories.get(c, str(c)) for c in present},
        "type": "groundtruth/object_detection",
    }
    obj = {
        "source-ref": source_ref,
        label_attr: annotation_object(sample),
        f"{label_attr}-metadata": meta,
    }
    return json.dumps(obj, ensure_ascii=False)


def write_manifest(sampleset: SampleSet, path: str | Path, *, source_refs: Sequence[str]) -> Path:
    """Write a manifest; `source_refs[i]` is the `source-ref` written for sample i."""
    if len(source_refs) != len(sampleset.samples):
        raise ValueError("one source_ref per sample is required")
    lines = [
        manifest_line(s, ref, sampleset.categories)
        for s, ref in zip(sampleset.samples, source_refs, strict=True)
    ]
    return atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))

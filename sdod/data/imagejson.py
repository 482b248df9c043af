"""SageMaker's image format: one annotation JSON per image, paired by file name.

Channels `train/` (images) and `train_annotation/` (JSON). Each JSON's `file` field is the
image's path relative to the image channel (e.g. `sample_image/sample_image1.jpg`); the JSON
has the same stem as its image. `categories` is optional.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from sdod.data.annotation import annotation_object, parse_annotation, parse_categories
from sdod.data.problems import Problems
from sdod.data.sample import Sample, SampleSet
from sdod.errors import DataError
from sdod.storage import atomic_write_json

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def list_images(root: Path) -> list[Path]:
    """Image files under `root` (recursive, sorted, by suffix, case-insensitive)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _resolve_file(field: object, images_dir: Path, json_path: Path) -> Path:
    """The image a `file` field names, refusing anything outside the image channel."""
    if not isinstance(field, str) or not field:
        raise DataError(f"{json_path}: field 'file' must be a non-empty relative path")
    if "://" in field:
        raise DataError(
            f"{json_path}: 'file' is {field!r}, a URI; it must be a path relative to the "
            "image channel (another bucket or prefix is not allowed)"
        )
    rel = PurePosixPath(field.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        raise DataError(
            f"{json_path}: 'file' is {field!r}, which points outside the image channel; "
            "use a path relative to the channel root without '..'"
        )
    return images_dir.joinpath(*rel.parts)


def _find_image(field: object, images_dir: Path, json_path: Path, by_stem: dict) -> Path:
    candidate = _resolve_file(field, images_dir, json_path)
    if candidate.is_file():
        return candidate
    # The spec pairs an annotation with the image of the same name; accept that pairing
    # when `file` carries a directory the upload flattened.
    same_stem = by_stem.get(json_path.stem)
    if same_stem is not None and same_stem.name == candidate.name:
        return same_stem
    raise DataError(
        f"{json_path}: image {field!r} not found in the image channel {images_dir}; "
        "upload the image or remove the annotation",
        rule="annotation_pairing",
        where=str(json_path),
    )


def read_image_json(
    images_dir: str | Path, annotations_dir: str | Path, *, strict: bool = True
) -> SampleSet:
    """Read an image channel and its annotation channel into Samples.

    Problems: unreadable JSON, bad fields, a `file` outside the channel, an annotation
    without image, an image without annotation, duplicates, class names that disagree
    between files. `strict`: raise one DataError listing them all. Otherwise skip the
    offending files and return the problems in `SampleSet.problems` (the annotation gate
    reports them and its policy decides).
    """
    images_dir, annotations_dir = Path(images_dir), Path(annotations_dir)
    for folder, name in ((images_dir, "image"), (annotations_dir, "annotation")):
        if not folder.is_dir():
            raise DataError(f"{name} channel {folder} does not exist or is not a folder")
    images = list_images(images_dir)
    problems = Problems(f"image format data in {images_dir} + {annotations_dir}")
    pairing = _Pairing(images_dir, images, problems)
    for json_path in sorted(annotations_dir.rglob("*.json")):
        pairing.take(json_path)
    for image in images:
        if image not in pairing.used and image.stem not in pairing.broken_stems:
            what = "image has no annotation JSON (expected one with the same name)"
            problems.add(str(image), what, "annotation_pairing")
    if strict:
        problems.raise_if_any()
    if not pairing.samples and not problems:
        raise DataError(f"no annotation JSON files found in {annotations_dir}")
    return SampleSet(pairing.samples, pairing.categories, problems.records)


class _Pairing:
    """Annotation files matched to their images one by one, problems collected."""

    def __init__(self, images_dir: Path, images: list[Path], problems: Problems) -> None:
        self.images_dir = images_dir
        self.by_stem = {p.stem: p for p in images}
        self.problems = problems
        self.samples: list[Sample] = []
        self.categories: dict[int, str] = {}
        self.used: dict[Path, Path] = {}  # image -> its annotation
        self.broken_stems: set[str] = set()  # their images are reported through the JSON

    def take(self, json_path: Path) -> None:
        try:
            obj = json.loads(json_path.read_text(encoding="utf-8"))
            parsed = parse_annotation(obj, str(json_path))
            image = _find_image(obj.get("file"), self.images_dir, json_path, self.by_stem)
            names = parse_categories(obj.get("categories"), str(json_path))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            self.problems.add(str(json_path), f"not valid JSON ({exc})")
            self.broken_stems.add(json_path.stem)
            return
        except DataError as exc:
            self.problems.add_error(exc, str(json_path), exc.rule or "annotation_valid")
            self.broken_stems.add(json_path.stem)
            return
        if image in self.used:
            what = f"image {image.name} is already annotated by {self.used[image]}"
            self.problems.add(str(json_path), what, "unique_keys")
            return
        clash = {
            c: (self.categories[c], n)
            for c, n in names.items()
            if c in self.categories and self.categories[c] != n
        }
        if clash:
            c, (before, now) = next(iter(clash.items()))
            what = f"class {c} is named {now!r} here but {before!r} in another file"
            self.problems.add(str(json_path), what, "category_names_agree")
            self.broken_stems.add(json_path.stem)  # its image is reported through this file
            return
        self.used[image] = json_path
        self.categories.update(names)
        key = image.relative_to(self.images_dir).with_suffix("").as_posix()
        self.samples.append(
            Sample(key, str(image), parsed.width, parsed.height, parsed.boxes, parsed.labels)
        )


def write_image_json(
    sampleset: SampleSet, images_dir: str | Path, annotations_dir: str | Path
) -> list[Path]:
    """Write one annotation JSON per sample; images must already lie under `images_dir`."""
    images_dir, annotations_dir = Path(images_dir), Path(annotations_dir)
    categories = [{"class_id": k, "name": v} for k, v in sorted(sampleset.categories.items())]
    written = []
    for sample in sampleset.samples:
        rel = Path(sample.image).relative_to(images_dir).as_posix()
        obj = {"file": rel, **annotation_object(sample)}
        if categories:
            obj["categories"] = categories
        stem = Path(rel).with_suffix("").name
        written.append(atomic_write_json(annotations_dir / f"{stem}.json", obj))
    return written

"""Importers for the formats users bring: COCO JSON and Pascal VOC XML, into Samples.

Class ids become contiguous from 0 (SageMaker requires it): COCO category ids in
ascending order, VOC class names in the order given (or sorted). COCO `iscrowd` boxes and
VOC `difficult` objects are kept with `difficult=True`, which the VOC metric ignores.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sdod.data.problems import Problems
from sdod.data.sample import Sample, SampleSet
from sdod.errors import DataError
from sdod.storage import read_json


def read_coco(annotation_file: str | Path, images_dir: str | Path) -> SampleSet:
    """COCO detection JSON (`images`, `annotations` with `bbox` [x, y, w, h], `categories`)."""
    path, images_dir = Path(annotation_file), Path(images_dir)
    coco = read_json(path, "COCO file")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DataError(f"{path}: COCO needs a list '{key}'")
    cat_ids = sorted(int(c["id"]) for c in coco["categories"])
    to_class = {cid: i for i, cid in enumerate(cat_ids)}
    names = {to_class[int(c["id"])]: str(c.get("name", c["id"])) for c in coco["categories"]}
    by_image: dict[int, list[dict]] = {}
    problems = Problems(f"COCO file {path}")
    for i, ann in enumerate(coco["annotations"]):
        if int(ann.get("category_id", -1)) not in to_class:
            problems.add(
                f"annotations[{i}]", f"category_id {ann.get('category_id')} is not in categories"
            )
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            problems.add(f"annotations[{i}]", f"bbox must be [x, y, width, height], got {bbox!r}")
            continue
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    samples = []
    for img in sorted(coco["images"], key=lambda im: str(im["file_name"])):
        anns = by_image.get(int(img["id"]), [])
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        labels = [to_class[int(a["category_id"])] for a in anns]
        crowd = [bool(a.get("iscrowd", 0)) for a in anns]
        file = images_dir / str(img["file_name"])
        if not file.is_file():
            problems.add(str(file), f"image of COCO image id {img['id']} not found")
            continue
        key = Path(str(img["file_name"])).stem
        size = int(img["width"]), int(img["height"])
        samples.append(
            Sample(key, str(file), *size, boxes, np.array(labels, np.int64), np.array(crowd, bool))
        )
    problems.raise_if_any()
    return SampleSet(samples, names)


def _voc_object(obj: ET.Element, where: str) -> tuple[str, list[float], bool]:
    name = (obj.findtext("name") or "").strip()
    box = obj.find("bndbox")
    if not name or box is None:
        raise DataError(f"{where}: an <object> needs <name> and <bndbox>")
    try:
        coords = [float(box.findtext(k) or "") for k in ("xmin", "ymin", "xmax", "ymax")]
    except ValueError:
        raise DataError(
            f"{where}: <bndbox> of {name!r} needs numeric xmin, ymin, xmax, ymax"
        ) from None
    return name, coords, (obj.findtext("difficult") or "0").strip() == "1"


def read_voc(
    annotations_dir: str | Path, images_dir: str | Path, class_names: Sequence[str] | None = None
) -> SampleSet:
    """Pascal VOC XML files (one per image). VOC pixel boxes are 1-based inclusive; they are
    kept as written (the VOC metric's +1 convention matches them)."""
    annotations_dir, images_dir = Path(annotations_dir), Path(images_dir)
    files = sorted(annotations_dir.glob("*.xml"))
    if not files:
        raise DataError(f"no VOC .xml files in {annotations_dir}")
    parsed = []
    problems = Problems(f"VOC annotations in {annotations_dir}")
    seen: set[str] = set()
    for xml in files:
        try:
            root = ET.parse(xml).getroot()
            size = root.find("size")
            width, height = int(size.findtext("width")), int(size.findtext("height"))  # type: ignore[union-attr, arg-type]
            objects = [_voc_object(o, str(xml)) for o in root.findall("object")]
        except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
            problems.add(str(xml), f"not a VOC annotation ({exc})")
            continue
        except DataError as exc:
            problems.add_error(exc, str(xml), exc.rule or "annotation_valid")
            continue
        image = images_dir / (root.findtext("filename") or f"{xml.stem}.jpg")
        if not image.is_file():
            problems.add(str(xml), f"image {image.name} not found in {images_dir}")
            continue
        seen.update(name for name, _, _ in objects)
        parsed.append((xml.stem, image, width, height, objects))
    problems.raise_if_any()
    names = list(class_names) if class_names else sorted(seen)
    unknown = seen - set(names)
    if unknown:
        raise DataError(f"VOC classes {sorted(unknown)} are not in the class list {names}")
    to_class = {n: i for i, n in enumerate(names)}
    samples = []
    for key, image, w, h, objs in parsed:
        boxes = np.array([c for _, c, _ in objs], np.float32).reshape(-1, 4)
        labels = np.array([to_class[n] for n, _, _ in objs], np.int64)
        samples.append(
            Sample(key, str(image), w, h, boxes, labels, np.array([d for _, _, d in objs], bool))
        )
    return SampleSet(samples, dict(enumerate(names)))

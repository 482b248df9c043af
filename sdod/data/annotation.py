"""SageMaker's per-image annotation object, shared by the image+JSON and manifest formats.

```
{"image_size": [{"width": W, "height": H, "depth": 3}],
 "annotations": [{"class_id": c, "left": x, "top": y, "width": w, "height": h}, ...]}
```
`left`/`top` is the upper-left corner in pixels; the box is `[left, top, left+width, top+height]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import numpy.typing as npt

from sdod.data.sample import Sample
from sdod.errors import DataError

BOX_FIELDS = ("class_id", "left", "top", "width", "height")
MAX_IMAGE_SIDE = 1 << 20  # pixels; larger is a typo (and overflows the checks' tables)
MAX_CLASS_ID = 1 << 31


@dataclass
class ParsedAnnotation:
    width: int
    height: int
    depth: int
    boxes: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]


def _number(value: Any, where: str, name: str) -> float:
    """A finite number (JSON also spells NaN and Infinity, and integers past any float)."""
    try:
        number = float(value) if isinstance(value, Real) and not isinstance(value, bool) else None
    except OverflowError:
        number = None
    if number is None or not math.isfinite(number):
        numeric = isinstance(value, Real) and not isinstance(value, bool)
        big = numeric and isinstance(value, int)
        shown = f"an integer of {value.bit_length()} bits" if big else repr(value)[:80]
        finite_rule = numeric and name.startswith("annotations")
        raise DataError(
            f"{where}: field {name!r} must be a finite number, got {shown}",
            rule="box_coordinates_finite" if finite_rule else None,
            where=f"{where}:{name}",
        )
    return number


def parse_image_size(value: Any, where: str) -> tuple[int, int, int]:
    """`image_size` is a one-element list of `{width, height, depth}` (a bare dict is accepted)."""
    size = value[0] if isinstance(value, list) and len(value) == 1 else value
    if not isinstance(size, dict):
        raise DataError(
            f"{where}: 'image_size' must be a list with one {{width, height, depth}} object, "
            f"got {value!r}"
        )
    dims = []
    for name in ("width", "height", "depth"):
        if name not in size:
            raise DataError(f"{where}: 'image_size' has no {name!r}")
        number = _number(size[name], where, f"image_size.{name}")
        if number != int(number) or not 0 < number <= MAX_IMAGE_SIDE:
            raise DataError(
                f"{where}: image_size.{name} must be a positive integer up to "
                f"{MAX_IMAGE_SIDE}, got {number}"
            )
        dims.append(int(number))
    return dims[0], dims[1], dims[2]


def parse_annotation(obj: Any, where: str) -> ParsedAnnotation:
    """Parse the `image_size` + `annotations` object; `where` names the file/line in errors."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "image_size" not in obj:
        raise DataError(f"{where}: missing required field 'image_size'")
    width, height, depth = parse_image_size(obj["image_size"], where)
    items = obj.get("annotations")
    if not isinstance(items, list):
        raise DataError(f"{where}: 'annotations' must be a list of boxes, got {items!r}")
    rows = np.zeros((len(items), 5), dtype=np.float64)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{where}: annotations[{i}] must be an object, got {item!r}")
        for j, name in enumerate(BOX_FIELDS):
            if name not in item:
                raise DataError(f"{where}: annotations[{i}] has no {name!r}")
            rows[i, j] = _number(item[name], where, f"annotations[{i}].{name}")
        if rows[i, 0] != int(rows[i, 0]):
            raise DataError(f"{where}: annotations[{i}].class_id must be an integer")
    with np.errstate(over="ignore"):  # past float32 becomes inf, refused below
        boxes = np.stack(
            [rows[:, 1], rows[:, 2], rows[:, 1] + rows[:, 3], rows[:, 2] + rows[:, 4]], axis=1
        ).astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1) | (np.abs(rows[:, 0]) > MAX_CLASS_ID))
    if bad.size:
        raise DataError(
            f"{where}: annotations[{int(bad[0])}] is out of range (coordinates beyond float32, "
            f"or a class_id past {MAX_CLASS_ID})",
            rule="box_coordinates_finite",
            where=f"{where}:annotations[{int(bad[0])}]",
        )
    return ParsedAnnotation(width, height, depth, boxes, rows[:, 0].astype(np.int64))


def parse_categories(value: Any, where: str) -> dict[int, str]:
    """The optional `categories` list: `[{"class_id": 0, "name": "dog"}, ...]`."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise DataError(f"{where}: 'categories' must be a list, got {value!r}")
    out: dict[int, str] = {}
    for i, cat in enumerate(value):
        if not isinstance(cat, dict) or "class_id" not in cat or "name" not in cat:
            raise DataError(f"{where}: categories[{i}] must have 'class_id' and 'name'")
        class_id = _number(cat["class_id"], where, f"categories[{i}].class_id")
        if class_id != int(class_id) or abs(class_id) > MAX_CLASS_ID:
            raise DataError(f"{where}: categories[{i}].class_id must be an integer class id")
        out[int(class_id)] = str(cat["name"])
    return out


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(float(value), 3)


def annotation_object(sample: Sample, depth: int = 3) -> dict[str, Any]:
    """The `image_size` + `annotations` object for one Sample (integers stay integers)."""
    annotations = []
    for (x0, y0, x1, y1), label in zip(sample.boxes.tolist(), sample.labels.tolist(), strict=True):
        annotations.append(
            {
                "class_id": int(label),
                "left": _plain(x0),
                "top": _plain(y0),
                "width": _plain(x1 - x0),
                "height": _plain(y1 - y0),
            }
        )
    size = {"width": sample.width, "height": sample.height, "depth": depth}
    return {"image_size": [size], "annotations": annotations}

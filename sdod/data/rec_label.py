"""The im2rec detection label: `[header_len, object_width, (cls, xmin, ymin, xmax, ymax)...]`.

Coordinates are normalised to 0..1. `header_len` (usually 2) says where the objects start,
so extra header fields are skipped; rows of -1 are `label_width` padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sdod.data.sample import Sample
from sdod.errors import DataError

HEADER_LEN = 2
OBJECT_WIDTH = 5


@dataclass(frozen=True)
class DetectionLabel:
    boxes: npt.NDArray[np.float32]  # [N, 4] normalised xmin, ymin, xmax, ymax
    classes: npt.NDArray[np.float32]  # [N]
    header: npt.NDArray[np.float32]  # the header_len leading values
    extra: npt.NDArray[np.float32]  # [N, object_width - 5] per-object extras (e.g. difficult)


def encode(sample: Sample) -> npt.NDArray[np.float32]:
    """A Sample's label vector, rounded to 6 decimals exactly as im2rec's `.lst` stores it."""
    rows = np.concatenate([sample.labels[:, None].astype(np.float64), sample.normalized_boxes()], 1)
    values = [HEADER_LEN, OBJECT_WIDTH, *np.round(rows, 6).reshape(-1).tolist()]
    return np.asarray([float(f"{v:.6f}") for v in values], dtype=np.float32)


def decode(label: npt.NDArray[np.float32], where: str) -> DetectionLabel:
    """Parse a detection label vector; DataError says what is wrong with it."""
    label = np.asarray(label, dtype=np.float32).reshape(-1)
    if label.size < 2:
        raise DataError(
            f"{where}: the label holds {label.size} number(s) and no boxes; the .rec was "
            "probably made by im2rec without --pack-label: re-run im2rec with --pack-label "
            "(or use `sdod pack`)"
        )
    header_len, width = int(label[0]), int(label[1])
    if header_len < 2 or width < 5 or header_len > label.size:
        raise DataError(
            f"{where}: label header [{label[0]}, {label[1]}] is not a detection header "
            "(expected header_len >= 2 and object width >= 5)"
        )
    body = label[header_len:]
    if body.size % width:
        raise DataError(
            f"{where}: {body.size} numbers after the header do not divide into objects of {width}"
        )
    rows = body.reshape(-1, width)
    rows = rows[~np.all(rows == -1, axis=1) & (rows[:, 0] >= 0)]
    return DetectionLabel(rows[:, 1:5].copy(), rows[:, 0].copy(), label[:header_len], rows[:, 5:])


def format_lst_line(key: int, label: npt.NDArray[np.float32], relpath: str) -> str:
    """`idx\\t2\\t5\\tcls\\txmin\\tymin\\txmax\\tymax...\\trelpath`: header and class ids as
    integers, coordinates as `%.6f` (the layout of MXNet's detection `.lst` files)."""
    values = np.asarray(label, dtype=np.float64)
    header_len, width = int(values[0]), int(values[1])
    fields = [str(key)]
    for i, v in enumerate(values.tolist()):
        column = (i - header_len) % width if i >= header_len else -1
        integral = i < header_len or column == 0
        fields.append(str(int(v)) if integral and float(v).is_integer() else f"{v:.6f}")
    fields.append(relpath)
    return "\t".join(fields)


def parse_lst_line(line: str, where: str) -> tuple[int, npt.NDArray[np.float32], str]:
    """im2rec's reading of a `.lst` line: key, float32 label, relative image path."""
    fields = [f.strip() for f in line.strip().split("\t")]
    if len(fields) < 3:
        raise DataError(f"{where}: expected 'idx<TAB>label...<TAB>path', got {line.strip()!r}")
    try:
        key = int(fields[0])
        label = np.asarray([float(v) for v in fields[1:-1]], dtype=np.float32)
    except ValueError as exc:
        raise DataError(f"{where}: not a number in {line.strip()!r} ({exc})") from None
    return key, label, fields[-1]

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
MAX_CLASS_ID = 1 << 31


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
    head = label[:2]
    if not (np.isfinite(head).all() and head[0] >= 2 and head[1] >= 5 and head[0] <= label.size):
        raise DataError(
            f"{where}: label header [{label[0]}, {label[1]}] is not a detection header "
            "(expected header_len >= 2 and object width >= 5, within the label)"
        )
    header_len, width = int(label[0]), int(label[1])
    body = label[header_len:]
    if body.size % width:
        raise DataError(
            f"{where}: {body.size} numbers after the header do not divide into objects of {width}"
        )
    rows = body.reshape(-1, width) if body.size else np.zeros((0, 5), np.float32)
    rows = rows[~np.all(rows == -1, axis=1) & ~(rows[:, 0] < 0)]  # padding; NaN stays
    bad = np.flatnonzero(~np.isfinite(rows[:, :5]).all(axis=1) | (rows[:, 0] >= MAX_CLASS_ID))
    if bad.size:
        raise DataError(
            f"{where}: object {int(bad[0])} has a non-finite or out-of-range class or coordinate "
            f"({rows[bad[0], :5].tolist()}); labels hold finite numbers only",
            rule="box_coordinates_finite",
            where=where,
        )
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
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
            label = np.asarray([float(v) for v in fields[1:-1]], dtype=np.float32)
    except ValueError as exc:
        raise DataError(f"{where}: not a number in {line.strip()!r} ({exc})") from None
    if not 0 <= key < 1 << 64:  # the IRHeader's id is a uint64
        raise DataError(f"{where}: index {key} is not an integer in [0, 2^64)")
    if not np.isfinite(label).all():  # NaN, inf, or beyond float32
        raise DataError(
            f"{where}: label value {int(np.flatnonzero(~np.isfinite(label))[0]) + 1} is "
            f"{label[~np.isfinite(label)][0]} (from {line.strip()[:80]!r}); labels hold finite "
            "float32 numbers only",
            rule="box_coordinates_finite",
            where=where,
        )
    return key, label, fields[-1]

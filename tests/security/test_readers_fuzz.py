"""Fuzzing the readers of untrusted data: mutated `.rec`/`.idx`/`.lst` bytes and random JSON
structures go through the real readers, and nothing but sdod's own errors (UserError and
its DataError) may come out. Seeded and bounded (`derandomize=True`): the same examples on
every run, all of it well under two minutes on two cores."""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdod.errors import UserError

# SDOD_FUZZ_EXAMPLES=5000 (and SDOD_FUZZ_RANDOM=1 for fresh examples) fuzzes deeper locally
FUZZ = settings(
    max_examples=int(os.environ.get("SDOD_FUZZ_EXAMPLES", "400")),
    derandomize=not os.environ.get("SDOD_FUZZ_RANDOM"),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
WORK = Path(tempfile.mkdtemp(prefix="sdod-fuzz-"))


def only_sdod_errors(read: Callable[[], object]) -> None:
    """Run a reader to its end; a UserError is a proper refusal, anything else a bug."""
    try:
        result = read()
        if hasattr(result, "__next__"):
            for _ in result:  # type: ignore[attr-defined]
                pass
    except UserError:
        pass


def jpeg(size: int = 8) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 90)).save(out, format="JPEG", quality=50)
    return out.getvalue()


# --- mutated bytes -------------------------------------------------------------------

NAN32 = struct.pack("<f", float("nan"))
MAGIC = struct.pack("<I", 0xCED7230A)
SPLICES = [
    NAN32,
    MAGIC,
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\x00\x00\x00\x20",
    b"\x00\x00\x00\x60",
    b"\xff\xd8",
    b"\x89PNG\r\n\x1a\n",
    b"\t",
    b"\n",
    b"-1",
    b"1e400",
]


@st.composite
def mutated(draw: st.DrawFn, base: bytes, hot: list[int]) -> bytes:
    """`base` with a few edits (overwrite, splice a telling value, cut, duplicate), half of
    them at `hot` offsets (headers and labels, where a parser decides things)."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        at_hot = bool(hot) and draw(st.booleans())
        pos = draw(st.sampled_from(hot)) if at_hot else draw(st.integers(0, max(len(data), 1)))
        pos = min(pos, len(data))
        kind = draw(st.sampled_from(["byte", "splice", "cut", "dup", "truncate"]))
        if kind == "byte" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == "splice":
            value = draw(st.sampled_from(SPLICES))
            data[pos : pos + len(value)] = value
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif kind == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
        else:
            del data[pos:]
    return bytes(data)


def _rec_base() -> tuple[bytes, bytes, list[int]]:
    """A valid 3-record detection .rec, its .idx, and the offsets of its headers and labels."""
    from sdod.data.recordio import RecordWriter, pack_record

    rec = WORK / "base.rec"
    labels = [
        [2, 5, 0, 0.1, 0.1, 0.6, 0.7],
        [2, 5, 1, 0.2, 0.3, 0.4, 0.9, 0, 0.5, 0.5, 0.9, 0.9],
        [3, 6, 7, 0, 0.0, 0.0, 1.0, 1.0, 1],
    ]
    with RecordWriter(rec, rec.with_suffix(".idx")) as writer:
        offsets = [
            writer.write(k, pack_record(np.asarray(lab, np.float32), jpeg(), id=k))
            for k, lab in enumerate(labels)
        ]
    hot = [o + i for o in offsets for i in range(0, 8 + 24 + 4 * 12, 4)]
    return rec.read_bytes(), rec.with_suffix(".idx").read_bytes(), hot


REC, IDX, HOT = _rec_base()


@st.composite
def rec_and_idx(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    rec = draw(mutated(REC, HOT)) if draw(st.booleans()) else REC
    choice = draw(st.sampled_from(["same", "mutated", "none"]))
    idx = {"same": IDX, "none": None}.get(choice) or draw(mutated(IDX, list(range(len(IDX)))))
    if rec == REC and idx == IDX:
        rec = draw(mutated(REC, HOT))
    return rec, idx


def _rec_readers(rec: Path) -> list[Callable[[], object]]:
    from sdod.data.rec_samples import RecDiagnosis, dump_rows, read_rec, read_records
    from sdod.data.recordio import iter_rec, read_idx, scan_rec

    idx = rec.with_suffix(".idx")
    return [
        lambda: iter_rec(rec),
        lambda: scan_rec(rec),
        lambda: read_idx(idx) if idx.exists() else None,
        lambda: read_records(rec),
        lambda: read_records(rec, heads_only=True),
        lambda: read_rec(rec, strict=False),
        lambda: read_rec(rec, strict=True),
        lambda: dump_rows(rec, RecDiagnosis()),
    ]


@FUZZ
@given(rec_and_idx())
def test_recordio_readers_raise_only_sdod_errors(files: tuple[bytes, bytes | None]) -> None:
    rec_bytes, idx_bytes = files
    rec = WORK / "fuzz.rec"
    rec.write_bytes(rec_bytes)
    rec.with_suffix(".idx").unlink(missing_ok=True)
    if idx_bytes is not None:
        rec.with_suffix(".idx").write_bytes(idx_bytes)
    for read in _rec_readers(rec):
        only_sdod_errors(read)


finite_or_not = st.floats(width=32, allow_nan=True, allow_infinity=True)


@FUZZ
@given(st.lists(finite_or_not | st.sampled_from([2.0, 5.0, 6.0, -1.0, 0.5]), max_size=24))
def test_the_detection_label_decoder_raises_only_sdod_errors(values: list[float]) -> None:
    from sdod.data.rec_label import decode

    only_sdod_errors(lambda: decode(np.asarray(values, np.float32), "fuzz"))


LST = b"0\t2\t5\t0\t0.100000\t0.100000\t0.600000\t0.700000\ta.jpg\n1\t2\t5\t1\t0.2\t0.2\t0.5\t0.5\tb.jpg\n"


@FUZZ
@given(mutated(LST, list(range(len(LST)))) | st.binary(max_size=200))
def test_the_lst_reader_raises_only_sdod_errors(data: bytes) -> None:
    from sdod.data.pack import items_from_lst

    lst = WORK / "fuzz.lst"
    lst.write_bytes(data)
    (WORK / "images").mkdir(exist_ok=True)
    only_sdod_errors(lambda: items_from_lst(lst, WORK / "images"))


# --- JSON structures -----------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([0, -1, 2**63, 10**400, 1e39, -0.0])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
number = scalars | st.integers(-5, 400)
size = st.fixed_dictionaries({"width": number, "height": number, "depth": number})
box = st.dictionaries(st.sampled_from(["class_id", "left", "top", "width", "height"]), number)
annotation = st.fixed_dictionaries(
    {
        "image_size": st.lists(size, max_size=2) | size | values,
        "annotations": st.lists(box, max_size=3) | values,
    },
    optional={
        "file": st.sampled_from(["a.jpg", "../a.jpg", "/etc/passwd", "s3://b/a.jpg", "a\x00.jpg"])
        | values,
        "categories": st.lists(
            st.fixed_dictionaries({"class_id": number, "name": values}), max_size=2
        )
        | values,
    },
)


def _write_json(path: Path, obj: Any, raw: bytes | None) -> None:
    path.write_bytes(raw if raw is not None else json.dumps(obj).encode())


@FUZZ
@given(annotation | values, st.none() | st.binary(max_size=64))
def test_the_image_json_reader_raises_only_sdod_errors(obj: Any, raw: bytes | None) -> None:
    from sdod.data.imagejson import read_image_json

    images, annotations = WORK / "ij-images", WORK / "ij-annotations"
    images.mkdir(exist_ok=True)
    annotations.mkdir(exist_ok=True)
    (images / "a.jpg").write_bytes(jpeg())
    _write_json(annotations / "a.json", obj, raw)
    only_sdod_errors(lambda: read_image_json(images, annotations, strict=True))
    only_sdod_errors(lambda: read_image_json(images, annotations, strict=False))


manifest_line = st.fixed_dictionaries(
    {
        "source-ref": st.sampled_from(["a.jpg", "s3://b/a.jpg", "file:///a.jpg", "x://a"]) | values,
        "bounding-box": annotation | values,
    },
    optional={
        "bounding-box-metadata": st.fixed_dictionaries({}, optional={"class-map": values}) | values
    },
)


@FUZZ
@given(st.lists(manifest_line | values | st.binary(max_size=40), min_size=1, max_size=4))
def test_the_manifest_reader_raises_only_sdod_errors(lines: list[Any]) -> None:
    from sdod.data.manifest import read_manifest

    path = WORK / "fuzz.manifest"
    encoded = [line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines]
    path.write_bytes(b"\n".join(encoded) + b"\n")
    only_sdod_errors(lambda: read_manifest(path, strict=True))
    only_sdod_errors(lambda: read_manifest(path, strict=False))


def test_the_crashes_fuzzing_found_stay_fixed() -> None:
    """Each raised something other than a UserError before (ValueError, KeyError)."""
    from sdod.data.rec_label import decode

    assert decode(np.asarray([6, 2.305843e18, 0, 0, 0, 0], np.float32), "x").boxes.size == 0
    with pytest.raises(UserError, match="is not a detection header"):
        decode(np.asarray([float("nan"), 5, 0, 0.1, 0.1, 0.5, 0.5], np.float32), "replay")
    rec = WORK / "replay.rec"
    rec.write_bytes(REC)
    rec.with_suffix(".idx").write_bytes(b"0\t0\n1\t0\n")  # two keys at one offset
    for read in _rec_readers(rec):
        only_sdod_errors(read)


# --- model archives ------------------------------------------------------------------


def _tar_base() -> tuple[bytes, list[int]]:
    """A valid (uncompressed) model archive with tiny weights, and its header offsets."""
    import tarfile

    from safetensors.numpy import save

    config = {"base_network": "resnet-lite", "num_classes": 1, "image_shape": 300}
    members = [
        ("hyperparams.json", b"{}"),
        ("model_config.json", json.dumps(config).encode()),
        ("metrics.json", b'{"validation:mAP": 0.5}'),
        ("model.safetensors", save({"w": np.ones(3, np.float32)})),
    ]
    out, headers = io.BytesIO(), []
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            headers.append(out.tell())
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue(), headers


TAR, TAR_HEADERS = _tar_base()
TAR_HOT = [h + i for h in TAR_HEADERS for i in (*range(0, 100, 9), *range(100, 160, 4), 156)]


def _with_checksums(data: bytes) -> bytes:
    """Recompute each header's checksum, so edits reach the parser behind it."""
    out = bytearray(data)
    for h in TAR_HEADERS:
        if h + 512 <= len(out):
            out[h + 148 : h + 156] = b" " * 8
            out[h + 148 : h + 155] = b"%06o\0" % sum(out[h : h + 512])
    return bytes(out)


@FUZZ
@given(mutated(TAR, TAR_HOT), st.booleans())
def test_the_model_archive_reader_raises_only_sdod_errors(data: bytes, fix: bool) -> None:
    from sdod.artifact import read_artifact

    path = WORK / "fuzz-model.tar"
    path.write_bytes(_with_checksums(data) if fix else data)
    only_sdod_errors(lambda: read_artifact(path))

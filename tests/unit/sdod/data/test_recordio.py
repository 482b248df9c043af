"""RecordIO against files the real MXNet wrote: reading, byte-identical packing, bad files."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdod.data.imagejson import read_image_json
from sdod.data.pack import PackOptions, items_from_lst, items_from_samples, pack
from sdod.data.rec_label import decode
from sdod.data.rec_samples import RecDiagnosis, dump_rows, read_rec, read_records
from sdod.data.recordio import (
    MAGIC_BYTES,
    frame,
    frame_parts,
    iter_rec,
    pack_record,
    unpack_record,
)
from sdod.errors import DataError

MX = Path(__file__).resolve().parents[3] / "fixtures" / "mxnet"
EXPECTED = json.loads((MX / "rec" / "expected.json").read_text())["files"]
GLUONCV = json.loads((MX / "rec" / "gluoncv_roundtrip.json").read_text())


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["train", "resize300"])
def test_reading_mxnet_rec_reproduces_expected_json(name: str) -> None:
    expected = EXPECTED[name]["records"]
    got = list(read_records(MX / "rec" / f"{name}.rec"))
    assert len(got) == len(expected) == 20
    for (key, offset, record), exp in zip(got, expected, strict=True):
        assert (key, offset) == (exp["key"], exp["offset"])
        assert (record.flag, record.id, record.id2) == (exp["flag"], exp["id"], exp["id2"])
        assert record.label.tolist() == exp["label"]
        assert record.label.astype("<f4").tobytes().hex() == exp["label_f32_hex"]
        assert len(record.image) == exp["image_len"]
        assert hashlib.sha256(record.image).hexdigest() == exp["image_sha256"]


def test_boxes_equal_gluoncv_record_file_detection() -> None:
    samples = read_rec(MX / "rec" / "train.rec").samples
    for sample, item in zip(samples, GLUONCV["train"]["items"], strict=True):
        ref = np.asarray(item["label"], dtype=np.float64)
        assert [sample.height, sample.width] == item["img_shape"][:2]
        np.testing.assert_allclose(sample.boxes, ref[:, :4], atol=1e-3)
        np.testing.assert_array_equal(sample.labels, ref[:, 4])


def test_pack_from_lst_is_byte_identical_to_im2rec(tmp_path: Path) -> None:
    result = pack(items_from_lst(MX / "rec" / "train.lst", MX / "images"), tmp_path / "train")
    assert _sha(result.rec) == EXPECTED["train"]["rec_sha256"]
    assert _sha(result.idx) == EXPECTED["train"]["idx_sha256"]
    assert _sha(result.lst) == EXPECTED["train"]["lst_sha256"]


def test_pack_from_annotations_is_byte_identical_to_im2rec(tmp_path: Path) -> None:
    sampleset = read_image_json(MX / "images", MX / "annotations")
    result = pack(items_from_samples(sampleset, MX / "images"), tmp_path / "train", workers=2)
    assert _sha(result.rec) == EXPECTED["train"]["rec_sha256"]
    assert _sha(result.idx) == EXPECTED["train"]["idx_sha256"]
    assert _sha(result.lst) == EXPECTED["train"]["lst_sha256"]


def test_resize_matches_im2rec_shapes_and_colour(tmp_path: Path) -> None:
    items = items_from_lst(MX / "rec" / "resize300.lst", MX / "images")
    one = pack(items, tmp_path / "r1", options=PackOptions(resize=300, quality=95))
    two = pack(items, tmp_path / "r2", options=PackOptions(resize=300, quality=95), workers=2)
    assert _sha(one.rec) == _sha(two.rec)  # worker count does not change the bytes
    for (_, _, record), exp in zip(
        read_records(one.rec), EXPECTED["resize300"]["records"], strict=True
    ):
        pixels = np.asarray(Image.open(io.BytesIO(record.image)).convert("RGB"), np.float64)
        assert list(pixels.shape) == exp["decoded_shape_unchanged"]
        np.testing.assert_allclose(pixels.mean(axis=(0, 1)), exp["decoded_rgb_mean"], atol=2.0)
        assert record.label.tolist() == exp["label"]


@pytest.mark.parametrize("positions", [[0], [8], [0, 4, 12], [40], [6]])
def test_records_holding_the_magic_split_and_rejoin(positions: list[int]) -> None:
    payload = bytearray(b"\x11" * 49)
    for p in positions:
        payload[p : p + 4] = MAGIC_BYTES
    framed = frame(bytes(payload))
    aligned = [p for p in positions if p % 4 == 0 and p + 4 <= 48]
    assert framed.count(MAGIC_BYTES) == len(aligned) + 1 + (len(positions) - len(aligned))
    assert len(framed) % 4 == 0
    f = io.BytesIO(framed + frame(b"next"))
    assert [p for _, p in _iter(f)] == [bytes(payload), b"next"]
    head, body = bytes(payload[:8]), bytes(payload[8:])
    assert b"".join(frame_parts(head, body)) == framed  # the no-copy path frames the same


def _iter(f: io.BytesIO) -> list[tuple[int, bytes]]:
    from sdod.data.recordio import RecordStream

    stream, out = RecordStream(f, "mem", f.tell()), []
    while (payload := stream.next()) is not None:
        out.append((0, payload))
    return out


def test_pack_and_unpack_header_variants() -> None:
    scalar = unpack_record(pack_record(2.0, b"img", id=7, id2=9))
    assert (scalar.flag, float(scalar.label), scalar.id, scalar.id2, scalar.image) == (
        0,
        2.0,
        7,
        9,
        b"img",
    )
    values = [4, 5, 640, 480, 1, 0.1, 0.2, 0.3, 0.4, 0, 0.5, 0.5, 1, 1]
    vector = unpack_record(pack_record(values, b"x"))
    assert (vector.flag, float(vector.label[0]), vector.image) == (14, 4.0, b"x")
    label = decode(vector.label, "r")
    assert label.header.tolist() == [4, 5, 640, 480]  # extra header fields are skipped
    assert label.classes.tolist() == [1, 0]
    np.testing.assert_allclose(label.boxes, [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 1, 1]])


def test_header_len_and_label_width_padding_are_honoured() -> None:
    label = np.array([4, 5, 800, 600, 1, 0.1, 0.2, 0.3, 0.4] + [-1] * 10, np.float32)
    decoded = decode(label, "r")
    assert decoded.classes.tolist() == [1]
    np.testing.assert_allclose(decoded.boxes, [[0.1, 0.2, 0.3, 0.4]])


def test_truncated_rec_is_a_clear_error(tmp_path: Path) -> None:
    data = (MX / "rec" / "train.rec").read_bytes()
    bad = tmp_path / "bad.rec"
    bad.write_bytes(data[: len(data) - 1000])
    with pytest.raises(DataError, match=r"bad\.rec: record at byte \d+ is truncated"):
        list(iter_rec(bad))


def test_idx_that_disagrees_with_rec_names_the_line(tmp_path: Path) -> None:
    shutil.copy(MX / "rec" / "train.rec", tmp_path / "t.rec")
    lines = (MX / "rec" / "train.idx").read_text().splitlines()
    lines[3] = "3\t12345"
    (tmp_path / "t.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"t\.idx:4: key 3 points to byte 12345, which is not"):
        list(read_records(tmp_path / "t.rec"))
    (tmp_path / "t.idx").write_text(
        "\n".join((MX / "rec" / "train.idx").read_text().splitlines()[:5])
    )
    with pytest.raises(DataError, match=r"lists 5 records but t\.rec holds 20"):
        list(read_records(tmp_path / "t.rec"))


def _diagnose(rec: Path, label_width: int = 350) -> list[str]:
    diagnosis = RecDiagnosis()
    list(dump_rows(rec, diagnosis))
    return diagnosis.findings(label_width)


def test_rec_without_pack_label_is_diagnosed(tmp_path: Path) -> None:
    image = (MX / "images" / "00_astronaut.jpg").read_bytes()
    rec = tmp_path / "nolabel.rec"
    rec.write_bytes(frame(pack_record(2.0, image)) * 2)  # what im2rec writes without --pack-label
    [finding] = _diagnose(rec)
    assert "carries no boxes" in finding and "--pack-label" in finding
    with pytest.raises(DataError, match="without --pack-label"):
        read_rec(rec)


def test_pixel_coordinates_and_small_label_width_are_diagnosed(tmp_path: Path) -> None:
    image = (MX / "images" / "00_astronaut.jpg").read_bytes()
    rec = tmp_path / "pixels.rec"
    rec.write_bytes(frame(pack_record([2, 5, 0, 165, 25, 300, 175], image, id=4)))
    findings = _diagnose(rec, label_width=6)
    assert any("look like pixels" in f and "keys 4" in f for f in findings)
    assert any("label_width hyperparameter to at least 7" in f for f in findings)
    assert _diagnose(MX / "rec" / "train.rec") == []


@pytest.mark.parametrize("damage", ["empty", "missing"])
def test_bad_image_fails_the_pack_and_leaves_nothing(tmp_path: Path, damage: str) -> None:
    shutil.copytree(MX / "images", tmp_path / "images")
    victim = tmp_path / "images" / "05_motorcycle_right_small.jpg"
    if damage == "empty":
        victim.write_bytes(b"")
    else:
        victim.unlink()
    items = items_from_lst(MX / "rec" / "train.lst", tmp_path / "images")
    with pytest.raises(DataError, match=r"05_motorcycle_right_small\.jpg"):
        pack(items, tmp_path / "out" / "train")
    assert list((tmp_path / "out").iterdir()) == []


def test_truncated_jpeg_fails_resize_with_its_name(tmp_path: Path) -> None:
    shutil.copytree(MX / "images", tmp_path / "images")
    victim = tmp_path / "images" / "02_coffee.jpg"
    victim.write_bytes(victim.read_bytes()[:500])
    items = items_from_lst(MX / "rec" / "train.lst", tmp_path / "images")
    with pytest.raises(DataError, match=r"02_coffee\.jpg: cannot decode the image"):
        pack(items, tmp_path / "out" / "t", options=PackOptions(resize=300))

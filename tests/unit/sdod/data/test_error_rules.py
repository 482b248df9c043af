"""Errors are data: code tells them apart by `DataError.rule`, never by message text.
Each rule a reader raises is matched here by its id."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sdod.data.dataset import decode_rgb
from sdod.data.imagejson import read_image_json
from sdod.data.rec_samples import samples_from_records
from sdod.data.recordio import Record
from sdod.demo.dataset import make_sample_data
from sdod.errors import DataError


def test_an_annotation_without_its_image_is_annotation_pairing(tmp_path: Path) -> None:
    make_sample_data(tmp_path, train=3, validation=1, seed=2)
    (tmp_path / "train" / "train_00001.jpg").unlink()
    data = read_image_json(tmp_path / "train", tmp_path / "train_annotation", strict=False)
    rules = {p.file.rsplit("/", 1)[-1]: p.rule for p in data.problems}
    assert rules["train_00001.json"] == "annotation_pairing"
    broken = tmp_path / "train_annotation" / "train_00002.json"
    obj = json.loads(broken.read_text())
    obj["annotations"][0]["width"] = "wide"
    broken.write_text(json.dumps(obj))
    data = read_image_json(tmp_path / "train", tmp_path / "train_annotation", strict=False)
    rules = {p.file.rsplit("/", 1)[-1]: p.rule for p in data.problems}
    assert rules["train_00002.json"] == "annotation_valid"  # a bad field, not a pairing


def test_an_image_that_does_not_decode_is_image_decodes() -> None:
    with pytest.raises(DataError) as info:
        decode_rgb(b"not an image", "upload.jpg")
    assert info.value.rule == "image_decodes" and info.value.where == "upload.jpg"
    assert info.value.reason is not None and "upload.jpg" not in info.value.reason


def test_a_record_with_broken_image_bytes_is_image_decodes() -> None:
    label = np.array([2, 5, 0, 0.1, 0.1, 0.5, 0.5], np.float32)
    items = [("d.rec", 0, 0, Record(7, label, 0, 0, b"\x00garbage"))]
    data = samples_from_records(items, "d.rec", strict=False)
    assert [p.rule for p in data.problems] == ["image_decodes"]
    with pytest.raises(DataError) as info:
        samples_from_records(items, "d.rec")
    assert info.value.rule == "image_decodes"

"""image+JSON and manifest readers: pairing rules and clear errors that name the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sdod.data.imagejson import read_image_json
from sdod.data.manifest import read_manifest
from sdod.demo.dataset import make_sample_data
from sdod.errors import DataError, UserError

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "mxnet"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    make_sample_data(tmp_path / "d", train=3, validation=1, seed=2)
    return tmp_path / "d"


def _edit(path: Path, **fields: object) -> None:
    obj = json.loads(path.read_text())
    obj.update(fields)
    path.write_text(json.dumps(obj))


def test_mxnet_fixture_annotations_read_as_pixel_boxes() -> None:
    samples = read_image_json(FIXTURES / "images", FIXTURES / "annotations").samples
    assert len(samples) == 20
    astronaut = samples[0]
    assert astronaut.key == "00_astronaut"
    np.testing.assert_array_equal(astronaut.boxes[0], [165, 25, 300, 175])
    np.testing.assert_array_equal(astronaut.labels, [0, 0, 2, 2])


def test_image_without_annotation_is_named(dataset: Path) -> None:
    (dataset / "train_annotation" / "train_00001.json").unlink()
    with pytest.raises(DataError, match=r"train_00001\.jpg: image has no annotation JSON"):
        read_image_json(dataset / "train", dataset / "train_annotation")


def test_annotation_without_image_is_named(dataset: Path) -> None:
    (dataset / "train" / "train_00002.jpg").unlink()
    with pytest.raises(DataError, match=r"train_00002\.json: image 'train_00002\.jpg' not found"):
        read_image_json(dataset / "train", dataset / "train_annotation")


@pytest.mark.parametrize(
    ("file_field", "rule"),
    [
        ("../validation/validation_00000.jpg", "points outside the image channel"),
        ("/etc/passwd", "points outside the image channel"),
        ("s3://other-bucket/train_00000.jpg", "a URI"),
    ],
)
def test_file_field_outside_the_channel_is_refused(
    dataset: Path, file_field: str, rule: str
) -> None:
    _edit(dataset / "train_annotation" / "train_00000.json", file=file_field)
    with pytest.raises(DataError, match=rf"train_00000\.json: 'file' is .*{rule}"):
        read_image_json(dataset / "train", dataset / "train_annotation")


def test_every_problem_is_reported_at_once(dataset: Path) -> None:
    _edit(dataset / "train_annotation" / "train_00000.json", image_size="big")
    (dataset / "train_annotation" / "train_00001.json").write_text("{not json")
    with pytest.raises(DataError, match="2 problem") as info:
        read_image_json(dataset / "train", dataset / "train_annotation")
    assert "train_00000.json" in str(info.value) and "train_00001.json" in str(info.value)


def test_file_in_a_subfolder_resolves_relative_to_the_channel(dataset: Path) -> None:
    sub = dataset / "train" / "sample_image"
    sub.mkdir()
    shutil.move(dataset / "train" / "train_00000.jpg", sub / "train_00000.jpg")
    _edit(dataset / "train_annotation" / "train_00000.json", file="sample_image/train_00000.jpg")
    samples = read_image_json(dataset / "train", dataset / "train_annotation").samples
    assert samples[0].key == "sample_image/train_00000"


def test_manifest_attribute_names_order_matters(tmp_path: Path) -> None:
    make_sample_data(tmp_path, fmt="manifest", train=2, validation=1)
    with pytest.raises(UserError, match="'source-ref' first"):
        read_manifest(tmp_path / "train.manifest", ["bounding-box", "source-ref"])


def test_manifest_line_without_label_attribute_names_the_line(tmp_path: Path) -> None:
    make_sample_data(tmp_path, fmt="manifest", train=3, validation=1)
    path = tmp_path / "train.manifest"
    lines = path.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["labels"] = broken.pop("bounding-box")
    lines[1] = json.dumps(broken)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.manifest:2: no label attribute 'bounding-box'"):
        read_manifest(path)

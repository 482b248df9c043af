"""make-sample-data: spec-shaped JSON, decodable images, boxes inside, same seed = same bytes."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdod.data.imagejson import read_image_json
from sdod.data.manifest import read_manifest
from sdod.demo.dataset import make_sample_data
from sdod.demo.scenes import generate_split
from sdod.errors import UserError


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def image_json_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imgjson")
    make_sample_data(out, train=12, validation=4, num_classes=4, seed=7)
    return out


def test_annotation_json_matches_the_spec_example_field_by_field(image_json_set: Path) -> None:
    for path in sorted((image_json_set / "train_annotation").glob("*.json")):
        obj = json.loads(path.read_text())
        assert list(obj) == ["file", "image_size", "annotations", "categories"]
        assert obj["file"] == f"{path.stem}.jpg"
        assert isinstance(obj["image_size"], list) and len(obj["image_size"]) == 1
        assert list(obj["image_size"][0]) == ["width", "height", "depth"]
        assert obj["image_size"][0]["depth"] == 3
        assert 1 <= len(obj["annotations"]) <= 8
        for ann in obj["annotations"]:
            assert list(ann) == ["class_id", "left", "top", "width", "height"]
            assert all(isinstance(v, int) for v in ann.values())
        assert obj["categories"] == [
            {"class_id": 0, "name": "circle"},
            {"class_id": 1, "name": "rectangle"},
            {"class_id": 2, "name": "triangle"},
            {"class_id": 3, "name": "cross"},
        ]


def test_images_decode_with_declared_size_and_boxes_inside(image_json_set: Path) -> None:
    for split in ("train", "validation"):
        sampleset = read_image_json(image_json_set / split, image_json_set / f"{split}_annotation")
        for sample in sampleset.samples:
            with Image.open(sample.image) as im:
                im.load()
                assert im.format == "JPEG" and im.mode == "RGB"
                assert im.size == (sample.width, sample.height)
            b = sample.boxes
            assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
            assert (b[:, 2] <= sample.width).all() and (b[:, 3] <= sample.height).all()
            assert (b[:, 2] - b[:, 0] >= 4).all() and (b[:, 3] - b[:, 1] >= 4).all()


def test_class_ids_are_contiguous_from_zero(image_json_set: Path) -> None:
    sampleset = read_image_json(image_json_set / "train", image_json_set / "train_annotation")
    labels = np.concatenate([s.labels for s in sampleset.samples])
    assert set(labels.tolist()) == {0, 1, 2, 3}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        make_sample_data(tmp_path / name, train=5, validation=2, seed=seed)
    a, b, c = (_tree_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert len(a) == 14
    assert a != c


def test_images_drawn_in_processes_are_the_bytes_one_process_draws() -> None:
    one = [(g.sample.key, g.jpeg) for g in generate_split(5, 0, 10, 3, "train", workers=1)]
    two = [(g.sample.key, g.jpeg) for g in generate_split(5, 0, 10, 3, "train", workers=2)]
    assert one == two
    assert [k for k, _ in two] == [f"train_{i:05d}" for i in range(10)]


def test_rerun_replaces_output_without_stale_files(tmp_path: Path) -> None:
    make_sample_data(tmp_path, train=6, validation=2)
    make_sample_data(tmp_path, train=3, validation=2)
    assert len(list((tmp_path / "train").iterdir())) == 3
    assert len(list((tmp_path / "train_annotation").iterdir())) == 3
    assert not list(tmp_path.glob(".sample-data-*"))


def test_manifest_format_reads_back_to_the_same_samples(tmp_path: Path) -> None:
    make_sample_data(tmp_path / "m", fmt="manifest", train=4, validation=2, seed=1)
    make_sample_data(tmp_path / "j", fmt="image-json", train=4, validation=2, seed=1)
    from_manifest = read_manifest(tmp_path / "m" / "train.manifest")
    from_json = read_image_json(tmp_path / "j" / "train", tmp_path / "j" / "train_annotation")
    assert [s.key for s in from_manifest.samples] == [s.key for s in from_json.samples]
    for m, j in zip(from_manifest.samples, from_json.samples, strict=True):
        np.testing.assert_array_equal(m.boxes, j.boxes)
        np.testing.assert_array_equal(m.labels, j.labels)
        assert Path(m.image).read_bytes() == Path(j.image).read_bytes()
    line = json.loads((tmp_path / "m" / "train.manifest").read_text().splitlines()[0])
    assert list(line) == ["source-ref", "bounding-box", "bounding-box-metadata"]
    assert line["bounding-box-metadata"]["type"] == "groundtruth/object_detection"


def test_manifest_source_ref_prefix(tmp_path: Path) -> None:
    make_sample_data(tmp_path, fmt="manifest", train=2, validation=1, source_ref_prefix="s3://b/d/")
    first = json.loads((tmp_path / "train.manifest").read_text().splitlines()[0])
    assert first["source-ref"] == "s3://b/d/train/train_00000.jpg"


def test_objects_are_varied_in_size_and_position(tmp_path: Path) -> None:
    make_sample_data(tmp_path, train=30, validation=1, num_classes=3)
    samples = read_image_json(tmp_path / "train", tmp_path / "train_annotation").samples
    boxes = np.concatenate([s.normalized_boxes() for s in samples])
    widths = boxes[:, 2] - boxes[:, 0]
    centres = (boxes[:, 0] + boxes[:, 2]) / 2
    assert widths.min() < 0.1 and widths.max() > 0.3
    assert centres.min() < 0.25 and centres.max() > 0.75
    jpeg = Path(samples[0].image).read_bytes()
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)), dtype=np.float32)
    assert pixels.std() > 20  # textured, not a flat canvas


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 9}, "--classes must be between 1 and 8"),
        ({"train": 0}, "at least 1 image"),
        ({"fmt": "recordio"}, "--format 'recordio' is not one of"),
    ],
)
def test_bad_arguments_are_user_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        make_sample_data(tmp_path, **kwargs)

"""COCO and VOC importers, conversion between SageMaker's formats, sharded packing,
truncated images in pass-through packing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sdod import tools
from sdod.data.imagejson import read_image_json
from sdod.data.importers import read_coco, read_voc
from sdod.data.manifest import read_manifest
from sdod.data.pack import items_from_lst, pack, pack_sharded
from sdod.data.rec_samples import read_rec, read_records
from sdod.errors import DataError

MX = Path(__file__).resolve().parents[3] / "fixtures" / "mxnet"


@pytest.fixture(scope="module")
def reference() -> list:
    return read_image_json(MX / "images", MX / "annotations").samples


def _coco(reference: list, path: Path) -> None:
    images, anns = [], []
    for i, s in enumerate(reference):
        images.append(
            {"id": 100 + i, "file_name": f"{s.key}.jpg", "width": s.width, "height": s.height}
        )
        for (x0, y0, x1, y1), c in zip(s.boxes.tolist(), s.labels.tolist(), strict=True):
            anns.append({"id": len(anns), "image_id": 100 + i, "category_id": [1, 3, 7][c],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})  # fmt: skip
    cats = [{"id": 7, "name": "object"}, {"id": 1, "name": "person"}, {"id": 3, "name": "animal"}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))


def test_coco_import_maps_category_ids_to_contiguous_classes(
    reference: list, tmp_path: Path
) -> None:
    _coco(reference, tmp_path / "coco.json")
    imported = read_coco(tmp_path / "coco.json", MX / "images")
    assert imported.categories == {0: "person", 1: "animal", 2: "object"}
    for a, b in zip(imported.samples, reference, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_coco_unknown_category_is_named(reference: list, tmp_path: Path) -> None:
    _coco(reference, tmp_path / "coco.json")
    coco = json.loads((tmp_path / "coco.json").read_text())
    coco["annotations"][3]["category_id"] = 99
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"annotations\[3\]: category_id 99 is not in categories"):
        read_coco(tmp_path / "coco.json", MX / "images")


def test_voc_import_with_difficult_and_class_order(tmp_path: Path) -> None:
    (tmp_path / "xml").mkdir()
    (tmp_path / "xml" / "01_chelsea.xml").write_text(
        "<annotation><filename>01_chelsea.jpg</filename><size><width>451</width><height>300</height>"
        "<depth>3</depth></size><object><name>cat</name><difficult>1</difficult><bndbox><xmin>30</xmin>"
        "<ymin>0</ymin><xmax>451</xmax><ymax>300</ymax></bndbox></object><object><name>dog</name>"
        "<bndbox><xmin>135</xmin><ymin>82</ymin><xmax>205</xmax><ymax>145</ymax></bndbox></object></annotation>"
    )
    imported = read_voc(tmp_path / "xml", MX / "images", class_names=["dog", "cat"])
    [s] = imported.samples
    assert s.labels.tolist() == [1, 0] and s.difficult.tolist() == [True, False]
    assert s.boxes[1].tolist() == [135, 82, 205, 145]
    with pytest.raises(DataError, match=r"VOC classes \['cat'\] are not in the class list"):
        read_voc(tmp_path / "xml", MX / "images", class_names=["dog"])


@pytest.mark.parametrize("to", ["image-json", "manifest", "recordio"])
def test_convert_round_trips_every_format(reference: list, tmp_path: Path, to: str) -> None:
    result = tools.convert(images=str(MX / "images"), annotations=str(MX / "annotations"), to=to,
                            out=str(tmp_path / "out"), channel="validation")  # fmt: skip
    assert result.images == 20
    out = tmp_path / "out"
    if to == "image-json":
        back = read_image_json(out / "validation", out / "validation_annotation").samples
    elif to == "manifest":
        back = read_manifest(out / "validation.manifest").samples
    else:
        back = read_rec(out / "validation.rec").samples
    for a, b in zip(back, reference, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_convert_from_rec_writes_the_images_out(tmp_path: Path) -> None:
    tools.convert(rec=str(MX / "rec" / "train.rec"), to="image-json", out=str(tmp_path))
    back = read_image_json(tmp_path / "train", tmp_path / "train_annotation").samples
    assert len(back) == 20
    assert (tmp_path / "train" / "0.jpg").read_bytes() == (
        MX / "images" / "00_astronaut.jpg"
    ).read_bytes()


def test_shards_concatenate_into_the_unsharded_rec(tmp_path: Path) -> None:
    items = items_from_lst(MX / "rec" / "train.lst", MX / "images")
    whole = pack(items, tmp_path / "whole", progress=False)
    parts = pack_sharded(items, tmp_path / "part", shards=3)
    assert [p.records for p in parts] == [7, 7, 6]
    joined = b"".join(Path(p.rec).read_bytes() for p in parts)
    assert joined == Path(whole.rec).read_bytes()
    (tmp_path / "joined.rec").write_bytes(joined)
    assert [k for k, _, _ in read_records(tmp_path / "joined.rec")] == list(range(20))


def test_truncated_jpeg_is_refused_in_pass_through(tmp_path: Path) -> None:
    shutil.copytree(MX / "images", tmp_path / "images")
    victim = tmp_path / "images" / "03_rocket.jpg"
    victim.write_bytes(victim.read_bytes()[:20000])
    items = items_from_lst(MX / "rec" / "train.lst", tmp_path / "images")
    with pytest.raises(DataError, match=r"03_rocket\.jpg: the JPEG is truncated"):
        pack(items, tmp_path / "out" / "t", progress=False)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []

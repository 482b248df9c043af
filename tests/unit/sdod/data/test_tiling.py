"""`sdod tile`: boxes whose places are known, cut by tile borders; the visible-area rule,
empty tiles kept at a rate, every tile traced to its source, any input to any output, the
safe image reader, and the command line end to end (VOC XML in, image+JSON out, the
annotation gate passes on the tiles)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdod.data.imagejson import read_image_json
from sdod.data.manifest import read_manifest
from sdod.data.rec_samples import read_rec
from sdod.data.sample import Sample, SampleSet
from sdod.data.tiling import (
    DEFAULT_MAX_PIXELS,
    TileOptions,
    TileResult,
    choose_empty,
    cut_sample,
    plan,
    tile,
)
from sdod.errors import DataError, UserError

REPO = Path(__file__).resolve().parents[4]
MX = REPO / "tests" / "fixtures" / "mxnet"
NAME = re.compile(r"^(?P<stem>.+)__x(?P<x>\d+)_y(?P<y>\d+)_w(?P<w>\d+)_h(?P<h>\d+)$")

# a 200 x 100 image in tiles of 120 with an overlap of 40: windows [0, 120) and [80, 200)
WIDE = [
    [60, 10, 100, 50],  # 0: whole in the left tile; half (0.5) in the right: dropped there
    [100, 60, 140, 90],  # 1: half in the left (dropped), whole in the right
    [90, 10, 110, 50],  # 2: inside the overlap: whole in both
    [50, 20, 150, 40],  # 3: wider than the overlap: 0.7 in each, kept clipped in both
    [0, 80, 200, 95],  # 4: exactly 0.6 in each: kept (the threshold is inclusive)
]


def _noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _image(path: Path, width: int, height: int, fmt: str = "JPEG") -> np.ndarray:
    pixels = _noise(width, height)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return pixels


def _sample(key: str, image: Path, width: int, height: int, boxes: list) -> Sample:
    return Sample(key, str(image), width, height, boxes, np.arange(len(boxes)) % 2)


def test_a_box_cut_by_a_border_is_whole_in_the_tile_that_holds_it_and_dropped_or_clipped_next_door() -> (
    None
):
    sample = _sample("wide", Path("wide.png"), 200, 100, WIDE)
    tiles, seen = cut_sample(sample, TileOptions(size=120, overlap=40))
    left, right = tiles
    assert [(t.window.x0, t.window.x1, t.window.y0, t.window.y1) for t in tiles] == [
        (0, 120, 0, 100),
        (80, 200, 0, 100),
    ]
    np.testing.assert_allclose(seen[:, 0], [1.0, 0.5])
    assert left.source_boxes == [0, 2, 3, 4]
    assert left.boxes.tolist() == [
        [60, 10, 100, 50],
        [90, 10, 110, 50],
        [50, 20, 120, 40],
        [0, 80, 120, 95],
    ]
    assert right.source_boxes == [1, 2, 3, 4]
    assert right.boxes.tolist() == [
        [20, 60, 60, 90],
        [10, 10, 30, 50],
        [0, 20, 70, 40],
        [0, 80, 120, 95],
    ]
    assert right.labels.tolist() == [1, 0, 1, 0]
    assert (left.clipped, right.clipped) == (2, 2)
    result = TileResult("image-json", "out", "index")
    plan(SampleSet([sample]), TileOptions(size=120, overlap=40), result)
    assert (result.boxes, result.boxes_clipped, result.boxes_dropped_partial) == (8, 4, 2)
    assert (result.objects, result.objects_only_clipped, result.objects_lost) == (5, 2, 0)


def test_an_object_kept_in_no_tile_is_counted_and_listed_never_lost_silently() -> None:
    sample = _sample("wide", Path("wide.png"), 200, 100, WIDE)
    result = TileResult("image-json", "out", "index")
    plan(SampleSet([sample]), TileOptions(size=120, overlap=40, min_visible=0.9), result)
    assert result.objects_lost == 2
    assert [(x["box_index"], x["best_visible"]) for x in result.lost] == [(3, 0.7), (4, 0.6)]
    assert result.boxes_dropped_partial == 2 + 2 + 2  # boxes 0 and 1 once, 3 and 4 twice


def _one_box_in_sixteen() -> SampleSet:
    # 400 x 400 in tiles of 100, no overlap: 16 tiles, one box in the first, 15 empty
    return SampleSet([_sample("grid", Path("grid.jpg"), 400, 400, [[10, 10, 50, 50]])])


@pytest.mark.parametrize(("rate", "empties"), [(0.0, 0), (0.2, 3), (0.5, 8), (1.0, 15)])
def test_empty_tiles_are_kept_at_the_rate(rate: float, empties: int) -> None:
    result = TileResult("image-json", "out", "index")
    chosen = plan(_one_box_in_sixteen(), TileOptions(100, 0, empty_rate=rate), result)
    assert (result.windows, result.empty_windows, result.empty_kept) == (16, 15, empties)
    assert len(chosen) == 1 + empties and chosen[0].source_boxes == [0]


def test_the_empty_tiles_kept_depend_on_the_seed_only() -> None:
    every, _ = cut_sample(_one_box_in_sixteen().samples[0], TileOptions(100, 0))
    picks = {seed: [t.name for t in choose_empty(every, 0.4, seed)] for seed in range(4)}
    assert picks[0] == [t.name for t in choose_empty(every, 0.4, 0)]
    assert len({tuple(p) for p in picks.values()}) > 1
    for names in picks.values():
        assert names == sorted(names, key=[t.name for t in every].index)  # image order kept


def test_each_tile_is_named_after_its_source_and_window_and_holds_those_pixels(
    tmp_path: Path,
) -> None:
    pixels = _image(tmp_path / "src" / "field.png", 300, 250, "PNG")
    sample = _sample("field", tmp_path / "src" / "field.png", 300, 250, [[100, 100, 150, 140]])
    result = tile(
        SampleSet([sample], {0: "tree", 1: "bush"}),
        TileOptions(128, 32, empty_rate=1),
        to="image-json",
        out=tmp_path / "out",
    )
    index = json.loads((tmp_path / "out" / "train_tiles.json").read_text())
    assert result.tiles == len(index["tiles"]) == 9 and index["summary"]["tiles"] == 9
    for row in index["tiles"]:
        x0, y0, x1, y1 = row["window"]
        m = NAME.match(row["tile"])
        assert m and m["stem"] == "field" and row["file"] == row["tile"] + ".png"
        assert [int(m[k]) for k in "xywh"] == [x0, y0, x1 - x0, y1 - y0]
        assert row["source"] == str(tmp_path / "src" / "field.png") and row["source_key"] == "field"
        with Image.open(tmp_path / "out" / "train" / row["file"]) as im:
            assert im.format == "PNG"  # PNG stays PNG, pixel for pixel
            np.testing.assert_array_equal(np.asarray(im), pixels[y0:y1, x0:x1])
    back = {
        s.key: s
        for s in read_image_json(
            tmp_path / "out" / "train", tmp_path / "out" / "train_annotation"
        ).samples
    }
    holder = back["field__x96_y96_w128_h128"]
    assert holder.boxes.tolist() == [[4, 4, 54, 44]] and holder.labels.tolist() == [0]


def test_jpeg_tiles_are_written_at_quality_95(tmp_path: Path) -> None:
    _image(tmp_path / "photo.jpg", 256, 200)
    sample = _sample("photo", tmp_path / "photo.jpg", 256, 200, [[10, 10, 60, 60]])
    tile(
        SampleSet([sample]),
        TileOptions(128, 0, empty_rate=1),
        to="image-json",
        out=tmp_path / "out",
    )
    reference = io.BytesIO()
    Image.fromarray(_noise(8, 8)).save(reference, "JPEG", quality=95)
    with (
        Image.open(reference) as ref,
        Image.open(tmp_path / "out" / "train" / "photo__x0_y0_w128_h128.jpg") as im,
    ):
        assert im.format == "JPEG" and im.quantization == ref.quantization


@pytest.mark.parametrize("to", ["manifest", "recordio"])
def test_tiles_are_written_in_every_format_convert_writes(tmp_path: Path, to: str) -> None:
    _image(tmp_path / "a.jpg", 200, 100)
    sample = _sample("a", tmp_path / "a.jpg", 200, 100, WIDE)
    result = tile(SampleSet([sample]), TileOptions(120, 40), to=to, out=tmp_path / "out")
    back = (
        read_manifest(tmp_path / "out" / "train.manifest")
        if to == "manifest"
        else read_rec(tmp_path / "out" / "train.rec")
    ).samples
    assert len(back) == result.tiles == 2
    right = back[1]
    np.testing.assert_allclose(
        right.boxes,
        [[20, 60, 60, 90], [10, 10, 30, 50], [0, 20, 70, 40], [0, 80, 120, 95]],
        atol=0.01,
    )
    index = json.loads(Path(result.index).read_text())
    assert index["tiles"][1]["window"] == [80, 0, 200, 100]
    if to == "recordio":
        assert index["tiles"][1]["record"] == 1


def test_a_rec_input_is_tiled_too(tmp_path: Path) -> None:
    from sdod.data.convert import read_inputs

    rec = read_inputs(rec=str(MX / "rec" / "train.rec"))
    result = tile(rec, TileOptions(256, 32, empty_rate=0), to="image-json", out=tmp_path)
    assert result.images == 20 and result.tiles > 0 and result.boxes > 0
    assert len(read_image_json(tmp_path / "train", tmp_path / "train_annotation")) == result.tiles


def _bad_images(folder: Path) -> list[tuple[Sample, dict, str]]:
    Image.fromarray(_noise(64, 64)).save(folder / "bitmap.jpg", "BMP")
    _image(folder / "big.jpg", 300, 200)
    _image(folder / "small.jpg", 100, 100)
    _image(folder / "cut.jpg", 300, 200)
    (folder / "cut.jpg").write_bytes((folder / "cut.jpg").read_bytes()[:5000])
    cases = [
        ("bitmap", 64, 64, {}, "image_format"),
        ("big", 300, 200, {"max_pixels": 50_000}, "image_pixels"),
        ("small", 120, 100, {}, "image_size_matches"),
        ("cut", 300, 200, {}, "image_decodes"),  # its header is fine: refused when decoded
    ]
    return [
        (_sample(stem, folder / f"{stem}.jpg", w, h, [[1, 1, 20, 20]]), extra, rule)
        for stem, w, h, extra, rule in cases
    ]


def test_bad_images_are_refused_by_rule_and_nothing_is_written(tmp_path: Path) -> None:
    for sample, extra, rule in _bad_images(tmp_path):
        out = tmp_path / sample.key
        with pytest.raises(DataError) as caught:
            tile(SampleSet([sample]), TileOptions(64, 0, **extra), to="image-json", out=out)
        assert caught.value.rule == rule and f"{sample.key}.jpg: " in str(caught.value)
        assert not (out / "train").exists() and not list(out.glob(".tiling-*"))


def test_every_bad_header_is_named_before_a_tile_is_written(tmp_path: Path) -> None:
    good = _sample("good", tmp_path / "good.jpg", 100, 100, [[1, 1, 20, 20]])
    _image(tmp_path / "good.jpg", 100, 100)
    bad = [sample for sample, extra, _ in _bad_images(tmp_path) if not extra]
    with pytest.raises(DataError, match=r"2 problem\(s\): .*bitmap\.jpg: .*small\.jpg: ") as caught:
        tile(SampleSet([good, *bad]), TileOptions(64, 0), to="image-json", out=tmp_path / "o")
    assert "cut.jpg" not in str(caught.value) and not (tmp_path / "o").exists()


def test_boxes_and_names_that_cannot_be_tiled_are_named_before_anything_is_read(
    tmp_path: Path,
) -> None:
    flat = _sample("flat", tmp_path / "flat.jpg", 100, 100, [[10, 10, 10, 40], [150, 0, 160, 10]])
    with pytest.raises(DataError, match=r"flat\.jpg: box 0 .*box_positive_size.*flat\.jpg: box 1"):
        tile(SampleSet([flat]), TileOptions(64, 0), to="image-json", out=tmp_path / "o")
    twins = [
        _sample(f"{d}/same", tmp_path / d / "same.jpg", 100, 100, [[1, 1, 9, 9]]) for d in "ab"
    ]
    with pytest.raises(UserError, match=r"both named 'same'"):
        tile(SampleSet(twins), TileOptions(64, 0), to="image-json", out=tmp_path / "o")
    for bad in (
        {"size": 16},
        {"size": 64, "overlap": 64},
        {"size": 64, "min_visible": 0},
        {"size": 64, "empty_rate": 1.5},
    ):
        with pytest.raises(UserError):
            TileOptions(**bad)


def test_the_pixel_budget_is_the_servers() -> None:
    from sdod.serve.images import DEFAULT_MAX_PIXELS as SERVED

    assert DEFAULT_MAX_PIXELS == SERVED


def _voc(
    folder: Path, stem: str, width: int, height: int, boxes: list[tuple[str, list[int]]]
) -> None:
    objects = "".join(
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in boxes
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.xml").write_text(
        f"<annotation><filename>{stem}.jpg</filename><size><width>{width}</width>"
        f"<height>{height}</height><depth>3</depth></size>{objects}</annotation>"
    )


def _sdod(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdod", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


def test_cli_tiles_a_large_voc_image_into_channels_that_pass_the_annotation_gate(
    tmp_path: Path,
) -> None:
    # an aerial-sized image (deepforest's 2299 x 2472) with trees on a grid, some on borders
    _image(tmp_path / "images" / "aerial.jpg", 2299, 2472)
    trees = [
        ("Tree", [x, y, x + 40, y + 36]) for x in range(30, 2250, 210) for y in range(50, 2400, 230)
    ]
    trees += [("Dead", [330, 340, 370, 380]), ("Dead", [380, 100, 420, 140])]  # on borders
    _voc(tmp_path / "xml", "aerial", 2299, 2472, trees)
    out = tmp_path / "tiles"
    run = _sdod(
        "tile",
        "--voc",
        str(tmp_path / "xml"),
        "--images",
        str(tmp_path / "images"),
        "--to",
        "image-json",
        "--out",
        str(out),
        "--size",
        "400",
        "--overlap",
        "64",
        "--json",
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert "tile: 1/1 images" in run.stderr  # progress on stderr
    assert (summary["images"], summary["objects"], summary["objects_lost"]) == (1, len(trees), 0)
    assert summary["windows"] == 7 * 8 and summary["tiles"] == len(list((out / "train").iterdir()))
    back = {s.key: s for s in read_image_json(out / "train", out / "train_annotation").samples}
    assert summary["boxes"] == sum(len(s.boxes) for s in back.values())

    def dead(tile: str) -> list[list[float]]:  # class 0: VOC names sorted, Dead before Tree
        sample = back[f"aerial__{tile}_w400_h400"]
        return sample.boxes[sample.labels == 0].tolist()

    assert dead("x0_y0") == [[330, 340, 370, 380]]  # the first whole; the second 0.5: dropped
    assert dead("x336_y0") == [[0, 340, 34, 380], [44, 100, 84, 140]]  # 0.85: clipped; whole
    assert dead("x336_y336") == [[0, 4, 34, 44]]
    gate = _sdod(
        "validate",
        "--images",
        str(out / "train"),
        "--annotations",
        str(out / "train_annotation"),
        "--num-classes",
        "2",
    )
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "PASSED" in gate.stdout


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.jpg", 300, 300)
    _voc(tmp_path / "xml", "a", 300, 300, [("Tree", [10, 10, 50, 50])])
    base = [
        "tile",
        "--voc",
        str(tmp_path / "xml"),
        "--images",
        str(tmp_path / "images"),
        "--to",
        "image-json",
        "--out",
        str(tmp_path / "o"),
    ]
    for extra, says in [
        (["--size", "8"], "tile size must be 32 to 8192 pixels, got 8"),
        (["--size", "128", "--max-pixels", "1000"], "a.jpg: the image declares 300 x 300 pixels"),
        (["--size", "128", "--annotations", str(tmp_path)], "give exactly one of"),
    ]:
        run = _sdod(*base, *extra)
        assert run.returncode == 2 and says in run.stderr and "Traceback" not in run.stderr
        told = [line for line in run.stderr.splitlines() if not line.startswith("tile: ")]
        assert len(told) == 1 and told[0].startswith("sdod tile: error: ")  # progress aside
    assert _sdod(*base, "--size", "128").returncode == 0
    again = _sdod(*base, "--size", "128")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert _sdod(*base, "--size", "100", "--overwrite").returncode == 0
    assert sorted(p.name for p in (tmp_path / "o" / "train").iterdir())[0].endswith(
        "_w100_h100.jpg"
    )

"""Sliced inference on images whose boxes are known: a perfect detector sees, in each tile,
every object's visible part; merged, each object comes back once, whole, at its exact
coordinates. Then the real predictor, the CLI and the server on a large image."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdod.data.tiles import Window, windows
from sdod.errors import UserError
from sdod.serve.options import parse_request
from sdod.serve.predictor import Predictor
from sdod.serve.slicing import Slicing, merge, tiles
from tests.security.conftest import noise_jpeg, write_tiny_model

W, H = 1000, 700


def oracle(objects: list[tuple[int, float, float, float, float]], window: Window) -> dict:
    """What a perfect detector answers for one tile: each object's visible part,
    normalised to the tile (SageMaker's rows)."""
    rows = []
    for label, x0, y0, x1, y1 in objects:
        vx0, vy0 = max(x0, window.x0), max(y0, window.y0)
        vx1, vy1 = min(x1, window.x1), min(y1, window.y1)
        if vx1 - vx0 > 0 and vy1 - vy0 > 0:
            box = [(vx0 - window.x0) / window.width, (vy0 - window.y0) / window.height,
                   (vx1 - window.x0) / window.width, (vy1 - window.y0) / window.height]  # fmt: skip
            rows.append([float(label), 0.9, *box])
    return {"prediction": rows}


OBJECTS = [
    (0, 20.0, 30.0, 120.0, 110.0),  # inside the first tile, on the image's edge side
    (1, 350.0, 40.0, 420.0, 100.0),  # cut by the first tile's right border (300..400 overlap)
    (0, 310.0, 200.0, 390.0, 280.0),  # inside the overlap: whole in two tiles
    (1, 200.0, 420.0, 650.0, 500.0),  # wider than the overlap: in three tiles, in pieces
    (0, 900.0, 620.0, 1000.0, 700.0),  # on the image's bottom-right corner
    (1, 560.0, 330.0, 640.0, 390.0),  # cut across x and y borders at once
]


@pytest.mark.parametrize("size, overlap", [(400, 100), (300, 90), (512, 128)])
def test_each_object_comes_back_once_whole_and_exact(size: int, overlap: int) -> None:
    slicing = Slicing(size, overlap)
    found = windows(W, H, size, overlap)
    answers = [oracle(OBJECTS, w) for w in found]
    merged = merge(answers, found, (W, H), slicing, nms_threshold=0.45)["prediction"]
    expected = sorted(
        [[float(c), 0.9, x0 / W, y0 / H, x1 / W, y1 / H] for c, x0, y0, x1, y1 in OBJECTS]
    )
    got = sorted(merged)
    assert len(got) == len(expected)
    for row, want in zip(got, expected, strict=True):
        assert row == pytest.approx(want, abs=1e-9)


def test_thresholds_and_top_k_apply_to_the_merged_image() -> None:
    slicing = Slicing(400, 100)
    found = windows(W, H, 400, 100)
    answers = [oracle(OBJECTS, w) for w in found]
    for answer in answers:
        for row in answer["prediction"]:
            row[1] = 0.2 if row[0] == 0 else 0.8
    merged = merge(answers, found, (W, H), slicing, nms_threshold=0.45, score_threshold=0.5)
    assert len(merged["prediction"]) == 3 and all(r[0] == 1.0 for r in merged["prediction"])
    merged = merge(answers, found, (W, H), slicing, nms_threshold=0.45, top_k=2)
    assert len(merged["prediction"]) == 2


def test_windows_cover_the_image_and_overlap() -> None:
    for width, height, size, overlap in [
        (1000, 700, 400, 100),
        (2299, 2472, 400, 80),
        (300, 200, 400, 0),
    ]:
        found = windows(width, height, size, overlap)
        covered = np.zeros((height, width), dtype=bool)
        for w in found:
            assert w.width <= size and w.height <= size
            covered[w.y0 : w.y1, w.x0 : w.x1] = True
        assert covered.all()
        xs = sorted({w.x0 for w in found})
        assert all(b - a <= size - overlap for a, b in itertools.pairwise(xs))
    with pytest.raises(UserError, match="tile overlap"):
        Slicing(400, 400)
    with pytest.raises(UserError, match="tiles of 32 pixels"):
        windows(100_000, 100_000, 32, 0)


def test_tiling_options_from_the_request() -> None:
    assert parse_request("", None)[2] is None
    assert parse_request("tile_size=400", None)[2] == Slicing(400, 80)
    threshold, top_k, slicing = parse_request(
        "top_k=3", "tile_size=512,tile_overlap=64,tile_whole=1"
    )
    assert (threshold, top_k, slicing) == (0.0, 3, Slicing(512, 64, True))
    for query in ("tile_size=20", "tile_size=x", "tile_overlap=10", "tile_size=400&tile_whole=2"):
        with pytest.raises(UserError):
            parse_request(query, None)


def _large_jpeg(width: int = 1200, height: int = 900) -> bytes:
    return noise_jpeg(0, (width, height))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("sliced") / "model.tar.gz")


def test_predictor_tiles_at_full_resolution_and_answers_in_whole_image_coordinates(
    model: Path,
) -> None:
    predictor = Predictor.load(model)
    data = _large_jpeg()
    found, batch, size = predictor.prepare_tiles(data, Slicing(400, 100, whole=True))
    assert size == (1200, 900) and len(found) == 4 * 3 + 1 and batch.shape == (13, 3, 300, 300)
    image = torch.zeros(3, 900, 1200, dtype=torch.uint8)
    assert len(tiles(image, Slicing(400, 100))[1]) == 12
    answer = predictor.predict_sliced(data, Slicing(400, 100), top_k=50)
    rows = answer["prediction"]
    assert 0 < len(rows) <= 50 and all(0.0 <= v <= 1.0 for row in rows for v in row[2:])
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)


def test_predict_cli_takes_tile_options(model: Path, tmp_path: Path) -> None:
    image = tmp_path / "large.jpg"
    image.write_bytes(_large_jpeg())
    run = lambda *extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "sdod", "predict", "--model", str(model), str(image), *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    result = run("--tile-size", "400", "--tile-overlap", "100", "--top-k", "5")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["prediction"]) <= 5
    result = run("--tile-overlap", "100")
    assert result.returncode == 2 and "need --tile-size" in result.stderr
    result = run("--tile-size", "400", "--tile-overlap", "400")
    assert (
        result.returncode == 2
        and "tile overlap" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_evaluate_through_one_whole_tile_scores_as_the_whole_image(
    model: Path, tmp_path: Path
) -> None:
    """A tile as large as the images is the whole image: the sliced path must score exactly
    as the batched one (the same decode, resize, network and decoding)."""
    from sdod.demo.dataset import make_sample_data

    make_sample_data(tmp_path / "data", train=2, validation=4, num_classes=2, seed=3)
    base = [
        sys.executable, "-m", "sdod", "evaluate", "--model", str(model), "--json",
        "--images", str(tmp_path / "data" / "validation"),
        "--annotations", str(tmp_path / "data" / "validation_annotation"),
    ]  # fmt: skip
    whole = subprocess.run(base, capture_output=True, text=True, timeout=300)
    sliced = subprocess.run(
        [*base, "--tile-size", "4096", "--tile-overlap", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    tiled = subprocess.run(
        [*base, "--tile-size", "128", "--tile-overlap", "32"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    for result in (whole, sliced, tiled):
        assert result.returncode == 0, result.stderr
    a, b, c = (json.loads(r.stdout) for r in (whole, sliced, tiled))
    assert a["images"] == b["images"] == c["images"] == 4
    assert b["mAP"] == pytest.approx(a["mAP"], abs=1e-6)
    assert 0.0 <= c["mAP"] <= 1.0


def test_neighbours_of_one_class_are_not_joined_into_one() -> None:
    """An uncut box beside an object cut by a border, and two boxes side by side in one
    tile, stay apart (parked cars, crowns in a row)."""
    objects = [
        (0, 250.0, 40.0, 500.0, 100.0),
        (0, 200.0, 40.0, 260.0, 100.0),
        (0, 120.0, 40.0, 199.0, 100.0),
    ]
    slicing = Slicing(400, 100)
    found = windows(W, H, 400, 100)
    merged = merge([oracle(objects, w) for w in found], found, (W, H), slicing, nms_threshold=0.45)
    expected = sorted(
        [[float(c), 0.9, x0 / W, y0 / H, x1 / W, y1 / H] for c, x0, y0, x1, y1 in objects]
    )
    got = sorted(merged["prediction"])
    assert len(got) == 3
    for row, want in zip(got, expected, strict=True):
        assert row == pytest.approx(want, abs=1e-9)

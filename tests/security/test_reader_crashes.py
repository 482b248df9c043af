"""Hostile annotation data that crashed the readers (a traceback, exit 1) or passed the
annotation check: each is now one line naming the file, record or field and the rule (exit
2), or a record quarantined under `--policy quarantine`. Through the CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sdod
from sdod.data.recordio import RecordWriter, pack_record

REPO = Path(sdod.__file__).resolve().parents[1]
NAN = float("nan")


def sdod_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "sdod", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def refused(run: subprocess.CompletedProcess[str], *says: str) -> None:
    """Exit 2 and one line on stderr that says what was refused; no traceback."""
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    for text in says:
        assert text in run.stderr, run.stderr


def jpeg(width: int = 64, height: int = 48) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 160, 30)).save(out, format="JPEG")
    return out.getvalue()


GOOD_LABEL = [2, 5, 0, 0.1, 0.1, 0.6, 0.7]


def write_rec(path: Path, labels: list[list[float]]) -> Path:
    """A .rec (and .idx) of 64x48 JPEGs with these detection labels, keys 0..N-1."""
    image = jpeg()
    with RecordWriter(path, path.with_suffix(".idx")) as writer:
        for key, label in enumerate(labels):
            writer.write(key, pack_record(np.asarray(label, np.float32), image, id=key))
    return path


def validate_json(*args: str, cwd: Path) -> tuple[int, dict[str, Any]]:
    run = sdod_cli("validate", "--num-classes", "1", "--json", *args, cwd=cwd)
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode, json.loads(run.stdout)


# --- .idx ------------------------------------------------------------------------------


def test_two_keys_at_one_offset_in_the_idx(tmp_path: Path) -> None:
    rec = write_rec(tmp_path / "data.rec", [GOOD_LABEL] * 3)
    offsets = [line.split("\t")[1] for line in rec.with_suffix(".idx").read_text().splitlines()]
    rec.with_suffix(".idx").write_text(f"0\t{offsets[0]}\n1\t{offsets[0]}\n2\t{offsets[2]}\n")
    says = f"data.idx:2: offset {offsets[0]} is listed twice (also on line 1)"
    refused(sdod_cli("rec-dump", str(rec), cwd=tmp_path), says)
    refused(sdod_cli("validate", "--num-classes", "1", "--rec", str(rec), cwd=tmp_path), says)


def test_an_idx_that_is_not_text(tmp_path: Path) -> None:
    rec = write_rec(tmp_path / "data.rec", [GOOD_LABEL])
    rec.with_suffix(".idx").write_bytes(b"0\t0\n\xff\xfe\n")
    refused(sdod_cli("rec-dump", str(rec), cwd=tmp_path), "data.idx: an .idx is text")


# --- .rec labels -----------------------------------------------------------------------

BAD_LABELS = {
    "nan-header-len": ([NAN, 5, 0, 0.1, 0.1, 0.6, 0.7], "annotation_valid"),
    "nan-label-width": ([2, NAN, 0, 0.1, 0.1, 0.6, 0.7], "annotation_valid"),
    "inf-header-len": ([float("inf"), 5, 0, 0.1, 0.1, 0.6, 0.7], "annotation_valid"),
    "nan-coordinate": ([2, 5, 0, 0.1, NAN, 0.6, 0.7], "box_coordinates_finite"),
    "inf-coordinate": ([2, 5, 0, 0.1, 0.1, float("inf"), 0.7], "box_coordinates_finite"),
    "nan-class": ([2, 5, NAN, 0.1, 0.1, 0.6, 0.7], "box_coordinates_finite"),
}


def test_non_finite_rec_labels_are_quarantined_by_name(tmp_path: Path) -> None:
    """One record of each kind among good ones: each quarantined, named, with its rule."""
    bad = list(BAD_LABELS.values())
    rec = write_rec(tmp_path / "data.rec", [GOOD_LABEL] * 7 + [label for label, _ in bad])
    args = ("--rec", str(rec), "--policy", "quarantine", "--max-bad-fraction", "0.5")
    code, report = validate_json(*args, cwd=tmp_path)
    assert code == 0 and report["passed"], report
    found = {q["file"].split(" (byte")[0]: q["reasons"] for q in report["quarantined"]}
    assert found == {f"{rec} record {7 + i}": [rule] for i, (_, rule) in enumerate(bad)}


def test_a_nan_header_len_fails_the_check_by_name(tmp_path: Path) -> None:
    rec = write_rec(tmp_path / "data.rec", [GOOD_LABEL, BAD_LABELS["nan-header-len"][0]])
    code, report = validate_json("--rec", str(rec), cwd=tmp_path)
    assert code == 2 and not report["passed"]
    [rule] = [r for r in report["rules"] if r["rule"] == "annotation_valid"]
    assert "record 1 " in rule["examples"][0]["message"]
    assert "is not a detection header" in rule["examples"][0]["message"]


def test_a_non_finite_lst_label_is_refused_by_pack(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(jpeg())
    lst = tmp_path / "data.lst"
    for value, says in (("nan", "label value 4 is nan"), ("1e39", "label value 4 is inf")):
        lst.write_text(f"0\t2\t5\t0\t{value}\t0.1\t0.6\t0.7\ta.jpg\n")
        args = ("pack", "--lst", str(lst), "--root", str(tmp_path / "images"))
        refused(sdod_cli(*args, "--out", str(tmp_path / "out"), cwd=tmp_path), "data.lst:1:", says)
    lst.write_bytes(b"0\t2\t5\t0\t0.1\t0.1\t0.6\t0.7\ta\xff.jpg\n")
    args = ("pack", "--lst", str(lst), "--root", str(tmp_path / "images"))
    refused(sdod_cli(*args, "--out", str(tmp_path / "out"), cwd=tmp_path), "a .lst is text")
    assert not (tmp_path / "out.rec").exists()


# --- image-JSON and manifest -----------------------------------------------------------


def annotation(left: object = 5, categories: object = None, top: object = 5) -> dict[str, Any]:
    obj = {
        "file": "a.jpg",
        "image_size": [{"width": 64, "height": 48, "depth": 3}],
        "annotations": [{"class_id": 0, "left": left, "top": top, "width": 20, "height": 20}],
    }
    return {**obj, "categories": categories} if categories is not None else obj


def image_json(root: Path, texts: dict[str, str]) -> tuple[Path, Path]:
    """Image channel and annotation channel: `texts` (stem -> JSON text) and one good pair."""
    images, annotations = root / "images", root / "annotations"
    images.mkdir(parents=True)
    annotations.mkdir()
    for stem, text in {**texts, "good": json.dumps(annotation())}.items():
        (images / f"{stem}.jpg").write_bytes(jpeg())
        (annotations / f"{stem}.json").write_text(text.replace('"a.jpg"', f'"{stem}.jpg"'))
    return images, annotations


HOSTILE_JSON = {
    "nan-left": (
        json.dumps(annotation(NAN)),
        "'annotations[0].left' must be a finite number, got nan",
    ),
    "infinite-left": (json.dumps(annotation(float("inf"))), "got inf"),
    "past-float32": (json.dumps(annotation(1e39)), "annotations[0] is out of range"),
    "huge-integer": (json.dumps(annotation(10**400)), "got an integer of 1329 bits"),
    "nan-width": (
        json.dumps(annotation()).replace('"width": 64', '"width": NaN'),
        "'image_size.width' must be a finite number",
    ),
    "category-id": (
        json.dumps(annotation(categories=[{"class_id": "dog", "name": "dog"}])),
        "'categories[0].class_id' must be a finite number",
    ),
    "deep-nesting": ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
}


@pytest.mark.parametrize("case", list(HOSTILE_JSON))
def test_hostile_image_json_is_refused_by_pack(tmp_path: Path, case: str) -> None:
    text, says = HOSTILE_JSON[case]
    images, annotations = image_json(tmp_path, {"a": text})
    out = str(tmp_path / "out")
    args = ("--images", str(images), "--annotations", str(annotations), "--out", out)
    refused(sdod_cli("pack", *args, cwd=tmp_path), "a.json", says)


def test_hostile_image_json_is_quarantined_by_validate(tmp_path: Path) -> None:
    texts = {f"bad-{case}": text for case, (text, _) in HOSTILE_JSON.items()}
    images, annotations = image_json(tmp_path, texts)
    args = ("--images", str(images), "--annotations", str(annotations))
    code, report = validate_json(
        *args, "--policy", "quarantine", "--max-bad-fraction", "0.9", cwd=tmp_path
    )
    assert code == 0, report
    assert sorted(q["file"] for q in report["quarantined"]) == sorted(
        str(annotations / f"{name}.json") for name in texts
    )


def manifest(path: Path, lines: list[bytes]) -> Path:
    """These lines, then a good one; images a.jpg and good.jpg beside it."""
    (path.parent / "a.jpg").write_bytes(jpeg())
    (path.parent / "good.jpg").write_bytes(jpeg())
    good = json.dumps({"source-ref": "good.jpg", "bounding-box": annotation()}).encode()
    path.write_bytes(b"\n".join([*lines, good]) + b"\n")
    return path


HOSTILE_LINES = {
    "nan-top": (
        json.dumps({"source-ref": "a.jpg", "bounding-box": annotation(top=NAN)}).encode(),
        "'annotations[0].top' must be a finite number",
    ),
    "not-utf8": (b'{"source-ref": "a\xff.jpg"}', "not valid JSON"),
    "deep-nesting": (b"[" * 100_000, "not valid JSON"),
    "nul-in-source-ref": (
        json.dumps({"source-ref": "a.jpg\x00x", "bounding-box": annotation()}).encode(),
        "'source-ref' must be a non-empty string",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_LINES))
def test_hostile_manifest_lines_are_refused_by_pack(tmp_path: Path, case: str) -> None:
    line, says = HOSTILE_LINES[case]
    path = manifest(tmp_path / "data.manifest", [line])
    out = str(tmp_path / "out")
    refused(
        sdod_cli("pack", "--manifest", str(path), "--out", out, cwd=tmp_path),
        "data.manifest:1",
        says,
    )


def test_hostile_manifest_lines_are_quarantined_by_validate(tmp_path: Path) -> None:
    path = manifest(tmp_path / "data.manifest", [line for line, _ in HOSTILE_LINES.values()])
    args = ("--manifest", str(path), "--policy", "quarantine", "--max-bad-fraction", "0.9")
    code, report = validate_json(*args, cwd=tmp_path)
    lines = range(1, len(HOSTILE_LINES) + 1)
    assert code == 0 and [q["file"] for q in report["quarantined"]] == [
        f"{path}:{n}" for n in lines
    ]


# --- the Great Expectations suite ------------------------------------------------------


def test_the_suite_fails_non_finite_boxes_whatever_reader_made_them(tmp_path: Path) -> None:
    """NaN compares false with every bound, so the range rules pass it: its own rule."""
    from sdod.checks.gate import run_checks
    from sdod.data.sample import Sample, SampleSet

    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg())
    boxes = [[[5, 5, 25, 25]], [[NAN, 5, 25, 25]], [[5, 5, float("inf"), 25]]]
    samples = [
        Sample(f"s{i}", str(image), 64, 48, np.asarray(box, np.float32), np.zeros(1, np.int64))
        for i, box in enumerate(boxes)
    ]
    report = run_checks({"train": SampleSet(samples)}, num_classes=1, decode=False)
    [rule] = [r for r in report.rules if r.rule == "box_coordinates_finite"]
    assert not report.passed and not rule.success and rule.count == 2
    assert sorted(e["key"] for e in rule.examples) == ["train/s1", "train/s2"]
    quarantine = run_checks(
        {"train": SampleSet(samples)},
        num_classes=1,
        decode=False,
        policy="quarantine",
        max_bad_fraction=0.9,
    )
    assert sorted(q["key"] for q in quarantine.quarantined) == ["train/s1", "train/s2"]


@pytest.mark.parametrize("text", [b"{not json", b"[" * 100_000, b'[{"key": null, "file": 5}]'])
def test_a_corrupt_quarantine_list_is_a_user_error(tmp_path: Path, text: bytes) -> None:
    """The pack stage reads the check stage's quarantine.json back from storage."""
    from sdod.checks.quarantine import read_quarantine
    from sdod.errors import UserError

    path = tmp_path / "quarantine.json"
    path.write_bytes(text)
    with pytest.raises(UserError, match="quarantine"):
        read_quarantine(str(path))

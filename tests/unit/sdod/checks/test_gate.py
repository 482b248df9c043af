"""The annotation gate: a corpus of broken datasets, one per rule, plus a clean one."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdod.checks.gate import run_checks
from sdod.data.imagejson import read_image_json
from sdod.data.sample import SampleSet
from sdod.demo.dataset import make_sample_data


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    make_sample_data(root, train=12, validation=4, num_classes=3, seed=21)
    return root


@pytest.fixture
def data(pristine: Path, tmp_path: Path) -> Path:
    shutil.copytree(pristine, tmp_path / "d")
    return tmp_path / "d"


def _channels(root: Path) -> dict[str, SampleSet]:
    return {c: read_image_json(root / c, root / f"{c}_annotation") for c in ("train", "validation")}


def _edit(root: Path, name: str, fn: Callable[[dict], None]) -> None:
    path = root / "train_annotation" / f"{name}.json"
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def _errors(report) -> set[str]:  # type: ignore[no-untyped-def]
    return {r.rule for r in report.failed("error")}


def _files(report, rule: str) -> set[str]:  # type: ignore[no-untyped-def]
    [r] = [r for r in report.rules if r.rule == rule]
    return {Path(str(e["file"])).stem for e in r.examples if "file" in e}


def test_the_clean_set_passes_every_rule(data: Path, tmp_path: Path) -> None:
    report = run_checks(_channels(data), num_classes=3, report_dir=tmp_path / "report")
    assert report.passed and report.failed("error") == [] and report.failed("warning") == []
    assert json.loads(Path(report.report_file).read_text())["passed"] is True  # type: ignore[arg-type]
    assert Path(report.data_docs).is_file()  # type: ignore[arg-type]
    assert "PASSED" in report.summary()


def _truncate(d: Path) -> None:
    p = d / "train" / "train_00003.jpg"
    p.write_bytes(p.read_bytes()[:3000])


def _declared_size(d: Path) -> None:
    _edit(
        d, "train_00003", lambda o: o["image_size"][0].update(width=o["image_size"][0]["width"] + 7)
    )


def _normalised(d: Path) -> None:
    def fn(o: dict) -> None:
        w, h = o["image_size"][0]["width"], o["image_size"][0]["height"]
        for a in o["annotations"]:
            a.update(
                left=a["left"] / w, top=a["top"] / h, width=a["width"] / w, height=a["height"] / h
            )

    _edit(d, "train_00003", fn)


def _bad_class(d: Path) -> None:
    _edit(d, "train_00003", lambda o: o["annotations"][0].update(class_id=5))


def _zero_width(d: Path) -> None:
    _edit(d, "train_00003", lambda o: o["annotations"][0].update(width=0))


def _outside(d: Path) -> None:
    _edit(
        d,
        "train_00003",
        lambda o: o["annotations"][0].update(left=o["image_size"][0]["width"] - 5, width=40),
    )


CASES = [
    ("image_decodes", _truncate, True, {"image_decodes"}),
    (
        "image_size_matches",
        _declared_size,
        True,
        {"image_size_matches"},
    ),
    ("pixel_coordinates", _normalised, False, {"pixel_coordinates"}),
    ("class_id_in_range", _bad_class, False, {"class_id_in_range"}),
    ("box_positive_size", _zero_width, False, {"box_positive_size"}),
    ("box_inside_image", _outside, False, {"box_inside_image"}),
]


@pytest.mark.parametrize(("rule", "damage", "decode", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_broken_set_fails_with_its_rule_and_names_the_file(
    data: Path, rule: str, damage: Callable[[Path], None], decode: bool, expected: set[str]
) -> None:
    damage(data)
    report = run_checks(_channels(data), num_classes=3, decode=decode)
    assert not report.passed
    assert _errors(report) == expected
    assert _files(report, rule) == {"train_00003"}
    assert rule in report.summary() and "train_00003" in report.summary()


def test_objects_beyond_label_width(data: Path) -> None:
    report = run_checks(
        _channels(data), num_classes=3, label_width=12, decode=False
    )  # 2 objects fit
    assert _errors(report) == {"objects_fit_label_width"}
    many = {s.key for s in _channels(data)["train"].samples if s.num_objects > 2}
    assert _files(report, "objects_fit_label_width") >= {k for k in many}


def test_missing_class_in_train_and_validation_classes_outside_train(data: Path) -> None:
    channels = _channels(data)
    train = channels["train"]
    for s in train.samples:  # drop class 2 from train only
        keep = s.labels != 2
        s.boxes, s.labels, s.difficult = s.boxes[keep], s.labels[keep], s.difficult[keep]
    report = run_checks(channels, num_classes=3, decode=False)
    assert _errors(report) == {"validation_classes_in_train"}
    # a class nobody drew is SageMaker's normal case (Ground Truth class maps): a warning
    assert {r.rule for r in report.failed("warning")} == {"train_has_every_class"}
    [missing] = [r for r in report.rules if r.rule == "train_has_every_class"]
    assert missing.examples == [{"missing_classes": [2]}]


def test_duplicate_keys_and_empty_channel(data: Path) -> None:
    channels = _channels(data)
    channels["train"].samples.append(copy.deepcopy(channels["train"].samples[0]))
    assert _errors(run_checks(channels, num_classes=3, decode=False)) == {"unique_keys"}
    empty = {"train": _channels(data)["train"], "validation": SampleSet([])}
    assert _errors(run_checks(empty, num_classes=3, decode=False)) == {"channels_not_empty"}


def test_grayscale_and_tiny_boxes_are_warnings_only(data: Path) -> None:
    image = data / "train" / "train_00004.jpg"
    Image.open(image).convert("L").save(image, quality=90)
    _edit(data, "train_00005", lambda o: o["annotations"][0].update(width=1))
    report = run_checks(_channels(data), num_classes=3)
    assert report.passed
    assert {r.rule for r in report.failed("warning")} == {"three_channels", "small_boxes"}


def test_quarantine_drops_three_of_fifty_and_stops_above_the_limit(tmp_path: Path) -> None:
    make_sample_data(tmp_path, train=50, validation=5, num_classes=3, seed=2)
    for name in ("train_00007", "train_00019", "train_00042"):
        _edit(tmp_path, name, lambda o: o["annotations"][0].update(class_id=9))
    channels = _channels(tmp_path)
    report = run_checks(
        channels, num_classes=3, policy="quarantine", max_bad_fraction=0.1, decode=False
    )
    assert report.passed
    assert [q["key"] for q in report.quarantined] == [
        "train/train_00007",
        "train/train_00019",
        "train/train_00042",
    ]
    assert all(q["reasons"] == ["class_id_in_range"] for q in report.quarantined)
    assert report.images["train"] == 50
    strict = run_checks(
        channels, num_classes=3, policy="quarantine", max_bad_fraction=0.05, decode=False
    )
    assert not strict.passed and "quarantined 3 images" in strict.summary()


def _validate_cli(data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "sdod",
        "validate",
        "--images",
        str(data / "train"),
        "--annotations",
        str(data / "train_annotation"),
        "--num-classes",
        "3",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_validate_cli_exits_2_with_the_summary(data: Path, tmp_path: Path) -> None:
    _bad_class(data)
    result = _validate_cli(data, "--report", str(tmp_path / "r"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "FAILED" in result.stdout
        and "class_id_in_range" in result.stdout
        and "train_00003" in result.stdout
    )
    assert (tmp_path / "r" / "report.json").is_file() and (
        tmp_path / "r" / "data_docs" / "index.html"
    ).is_file()
    assert np.isclose(
        json.loads((tmp_path / "r" / "report.json").read_text())["bad_fraction"], 1 / 12
    )


def _lenient(root: Path) -> dict[str, SampleSet]:
    return {
        c: read_image_json(root / c, root / f"{c}_annotation", strict=False)
        for c in ("train", "validation")
    }


def test_unpaired_files_are_rules_in_the_report_and_quarantine_drops_them(data: Path) -> None:
    (data / "train_annotation" / "train_00002.json").unlink()  # image without annotation
    (data / "train" / "train_00005.jpg").unlink()  # annotation without image
    report = run_checks(_lenient(data), num_classes=3, decode=False)
    assert not report.passed and _errors(report) == {"annotation_pairing"}
    assert _files(report, "annotation_pairing") == {"train_00002", "train_00005"}
    kept = run_checks(
        _lenient(data), num_classes=3, decode=False, policy="quarantine", max_bad_fraction=0.2
    )
    assert kept.passed
    assert sorted(Path(q["file"]).name for q in kept.quarantined) == [
        "train_00002.jpg",
        "train_00005.json",
    ]


def test_category_names_must_agree_across_files(data: Path) -> None:
    _edit(data, "train_00006", lambda o: o["categories"][0].update(name="disc"))
    report = run_checks(_lenient(data), num_classes=3, decode=False)
    assert _errors(report) == {"category_names_agree"}
    [rule] = [r for r in report.rules if r.rule == "category_names_agree"]
    assert (
        "train_00006.json" in rule.examples[0]["file"] and "'disc'" in rule.examples[0]["message"]
    )


def test_validate_cli_reports_an_unpaired_image_as_a_rule(data: Path) -> None:
    (data / "train_annotation" / "train_00002.json").unlink()
    result = _validate_cli(data)
    assert (
        result.returncode == 2
        and "annotation_pairing" in result.stdout
        and "train_00002.jpg" in result.stdout
    )


def test_grayscale_reject_makes_a_non_rgb_image_an_error_and_quarantine_drops_it(
    data: Path,
) -> None:
    image = data / "train" / "train_00004.jpg"
    Image.open(image).convert("L").save(image, quality=90)
    report = run_checks(_channels(data), num_classes=3, grayscale="reject")
    assert not report.passed and _errors(report) == {"three_channels"}
    assert _files(report, "three_channels") == {"train_00004"}
    kept = run_checks(_channels(data), num_classes=3, grayscale="reject", policy="quarantine")
    assert kept.passed
    assert [(q["key"], q["reasons"]) for q in kept.quarantined] == [
        ("train/train_00004", ["three_channels"])
    ]


def test_class_imbalance_is_a_warning_with_both_counts(data: Path) -> None:
    channels = _channels(data)
    for s in channels["train"].samples:
        s.labels[:] = 0  # every box class 0 ...
    channels["train"].samples[0].labels[0] = 1  # ... but one of class 1 and one of class 2
    channels["train"].samples[1].labels[0] = 2
    total = channels["train"].num_boxes
    report = run_checks(channels, num_classes=3, decode=False)
    assert report.passed and {r.rule for r in report.failed("warning")} == {"class_balance"}
    [rule] = [r for r in report.rules if r.rule == "class_balance"]
    assert rule.examples[0]["most_frequent"] == {"class_id": 0, "boxes": total - 2}
    assert rule.examples[0]["rarest"]["boxes"] == 1
    assert "class_balance" in report.summary() and f"ratio={total - 2}" in report.summary()
    relaxed = run_checks(channels, num_classes=3, decode=False, max_class_ratio=total)
    assert relaxed.failed("warning") == []


def test_manifest_and_recordio_go_through_the_non_strict_readers(tmp_path: Path) -> None:
    from sdod import tools
    from sdod.data.rec_label import encode
    from sdod.data.recordio import RecordWriter, pack_record

    make_sample_data(tmp_path / "m", fmt="manifest", train=10, validation=2, num_classes=3, seed=4)
    [manifest] = sorted((tmp_path / "m").glob("train*.manifest"))
    lines = manifest.read_text().splitlines()
    lines[3] = lines[3][:-5]  # broken JSON on line 4
    lines.append(lines[0])  # line 11 repeats line 1's image
    manifest.write_text("\n".join(lines) + "\n")
    report = tools.validate(num_classes=3, manifest=str(manifest))
    assert not report.passed and _errors(report) == {"annotation_valid", "unique_keys"}
    assert any(f"{manifest.name}:4" in str(e["file"]) for r in report.rules for e in r.examples)
    kept = tools.validate(
        num_classes=3, manifest=str(manifest), policy="quarantine", max_bad_fraction=0.25
    )
    assert kept.passed and len(kept.quarantined) == 2 and report.images["train"] == 9

    make_sample_data(tmp_path / "i", train=3, validation=1, num_classes=3, seed=4)
    samples = _channels(tmp_path / "i")["train"].samples
    rec = tmp_path / "t.rec"
    with RecordWriter(rec) as w:
        for i, s in enumerate(samples):
            image = Path(s.image).read_bytes() if i != 1 else b"not an image"
            w.write(i, pack_record(encode(s), image, id=i))
    report = tools.validate(num_classes=3, rec=str(rec))
    assert not report.passed and _errors(report) == {"image_decodes"}
    [rule] = [r for r in report.rules if r.rule == "image_decodes"]
    assert "record 1" in rule.examples[0]["file"]
    assert report.images["train"] == 2


def test_a_kept_file_context_holds_suites_and_data_docs_across_runs(
    data: Path, tmp_path: Path
) -> None:
    project = tmp_path / "gx"
    for run in ("r1", "r2"):  # the second run updates what the first kept
        report = run_checks(
            _channels(data),
            num_classes=3,
            decode=False,
            report_dir=tmp_path / run,
            gx_project=project,
        )
        assert report.passed and Path(report.data_docs).is_file()  # type: ignore[arg-type]
    kept = project / "gx"
    assert (kept / "great_expectations.yml").is_file()
    assert {p.stem for p in (kept / "expectations").glob("*.json")} == {"sdod_images", "sdod_boxes"}
    assert (kept / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()
    results = list((kept / "uncommitted" / "validations").rglob("*.json"))
    assert len(results) == 4  # two tables, two runs


def test_packing_drops_exactly_what_the_check_quarantined(tmp_path: Path) -> None:
    """The check -> pack handoff through the quarantine list (as the DAG runs it): the
    packed train channel holds the 47 good images and none of the 3 bad ones."""
    from sdod import stages
    from sdod.data.rec_samples import read_rec

    make_sample_data(tmp_path / "data", train=50, validation=5, num_classes=3, seed=2)
    bad = ("train_00007", "train_00019", "train_00042")
    for name in bad:
        _edit(tmp_path / "data", name, lambda o: o["annotations"][0].update(class_id=9))
    spec = {
        "TrainingJobName": "handoff",
        "HyperParameters": {"num_classes": "3", "num_training_samples": "50"},
        "InputDataConfig": [
            {"ChannelName": c, "DataSource": {"S3DataSource": {"S3Uri": str(tmp_path / "data" / c)}}}
            for c in ("train", "validation", "train_annotation", "validation_annotation")
        ],
        "OutputDataConfig": {"S3OutputPath": str(tmp_path / "out")},
    }  # fmt: skip
    work = str(tmp_path / "work")
    staged = stages.ingest(job_spec=spec, work_uri=work, run_id="r1")
    checked = stages.check(job_spec=staged.spec, policy="quarantine", max_bad_fraction=0.1)
    assert checked.passed and checked.quarantined == 3
    packed = stages.pack_job(
        job_spec=staged.spec, work_uri=work, quarantine_uri=checked.quarantine_uri
    )
    assert packed.records["train"] == 47
    keys = {s.key for s in read_rec(packed.rec_files["train"]).samples}
    lst = Path(packed.rec_files["train"]).with_suffix(".lst").read_text()
    assert len(keys) == 47 and not any(f"{name}." in lst for name in bad)

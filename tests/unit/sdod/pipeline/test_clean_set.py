"""The check -> pack handoff: check writes the clean set (the accepted samples, parsed),
pack packs it without reading the annotations again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdod import stages
from sdod.demo.dataset import make_sample_data
from sdod.errors import DataError
from sdod.jobspec import Channel
from sdod.pipeline.check import read_clean_set

BAD = ("train_00003", "train_00011")


@pytest.fixture
def checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, str, object]:
    """A job of 20 train images, 2 of them with a class id out of range, ingested and
    checked with policy quarantine: its staged spec, work URI and check result."""
    monkeypatch.setenv("SDOD_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    make_sample_data(data, train=20, validation=4, num_classes=3, seed=4)
    for name in BAD:
        path = data / "train_annotation" / f"{name}.json"
        obj = json.loads(path.read_text())
        obj["annotations"][0]["class_id"] = 9
        path.write_text(json.dumps(obj))
    spec = {
        "TrainingJobName": "clean-set",
        "HyperParameters": {"num_classes": "3", "num_training_samples": "20"},
        "InputDataConfig": [
            {"ChannelName": c, "DataSource": {"S3DataSource": {"S3Uri": str(data / c)}}}
            for c in ("train", "validation", "train_annotation", "validation_annotation")
        ],
        "OutputDataConfig": {"S3OutputPath": str(tmp_path / "out")},
    }
    work = str(tmp_path / "work")
    staged = stages.ingest(job_spec=spec, work_uri=work, run_id="r1")
    assert staged.spec is not None
    result = stages.check(job_spec=staged.spec, policy="quarantine", max_bad_fraction=0.2)
    return staged.spec, work, result


def test_check_writes_the_accepted_samples_with_job_relative_images(checked: tuple) -> None:
    spec, _, result = checked
    clean = json.loads(Path(result.clean_uri, "train.json").read_text())
    assert clean["channel"] == "train"
    assert clean["source"] == stages.parse_spec(spec).channel("train").uri
    keys = [row[0] for row in clean["samples"]]
    assert len(keys) == 18 and not set(BAD) & set(keys)
    assert all(row[1].startswith("input/data/train/") for row in clean["samples"])
    assert Path(result.quarantine_uri).is_file()  # the drop list is still written


def test_pack_packs_the_clean_set_without_reading_the_channel(
    checked: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdod.data.rec_samples import read_rec

    spec, work, result = checked

    def unread(*_: object, **__: object) -> None:
        raise AssertionError("pack read the channel's annotations again")

    monkeypatch.setattr("sdod.data.channels.read_channel", unread)
    packed = stages.pack_job(job_spec=spec, work_uri=work, quarantine_uri=result.quarantine_uri)
    assert packed.records == {"train": 18, "validation": 4}
    keys = {s.key for s in read_rec(packed.rec_files["train"]).samples}
    assert len(keys) == 18


def test_a_clean_set_of_other_data_is_not_used(checked: tuple, tmp_path: Path) -> None:
    _, _, result = checked
    other = Channel("train", str(tmp_path / "elsewhere"), "image/jpeg", "File")
    assert read_clean_set(str(Path(result.clean_uri, "train.json")), other, tmp_path) is None
    assert read_clean_set(str(tmp_path / "none.json"), other, tmp_path) is None


def test_a_clean_set_image_outside_the_job_root_is_refused(checked: tuple, tmp_path: Path) -> None:
    spec, _, result = checked
    path = Path(result.clean_uri, "train.json")
    clean = json.loads(path.read_text())
    clean["samples"][0][1] = "../../etc/passwd"
    path.write_text(json.dumps(clean))
    channel = stages.parse_spec(spec).channel("train")
    with pytest.raises(DataError, match="clean set image"):
        read_clean_set(str(path), channel, tmp_path / "root")

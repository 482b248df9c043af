"""The DAG's tuning steps: prepare (the trials read the packed data), then the summary."""

from __future__ import annotations

from pathlib import Path

from sdod.jobspec import parse_job_spec
from sdod.tune.spec import parse_tuning_request
from sdod.tune.steps import prepare_tuning, summarize_tuning, with_training_channels
from tests.unit.sdod.tune.test_spec import request


def _packed(spec_request: dict) -> dict:
    packed = {
        "ChannelName": "train", "ContentType": "application/x-recordio", "InputMode": "File",
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://w/packed/train/"}},
    }  # fmt: skip
    return {**spec_request, "InputDataConfig": [packed]}


def test_prepare_points_the_trials_at_the_packed_data_in_a_new_request(tmp_path: Path) -> None:
    raw = request()
    raw["TrainingJobDefinition"]["OutputDataConfig"] = {"S3OutputPath": str(tmp_path / "out")}
    spec = parse_tuning_request(raw)
    packed = parse_job_spec(_packed(spec.example_request()))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    prepared = prepare_tuning(spec, channels_from=packed, storage=storage)
    assert prepared["lanes"] == [0, 1]
    channels = prepared["tuning"]["TrainingJobDefinition"]["InputDataConfig"]
    assert channels == packed.raw["InputDataConfig"]
    assert raw["TrainingJobDefinition"]["InputDataConfig"] != channels  # not edited in place
    again = parse_tuning_request(prepared["tuning"])
    assert again == with_training_channels(spec, packed)
    summary = summarize_tuning(again, storage=storage)
    assert summary["HyperParameterTuningJobName"] == spec.name
    assert summary["TrainingJobSummaries"] == []
    assert (tmp_path / "out" / spec.name / "describe.json").is_file()

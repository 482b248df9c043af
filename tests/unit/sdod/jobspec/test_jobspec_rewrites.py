"""A changed request is a new spec: ingest's snapshot, pack's RecordIO channels and
checkpoints; the spec it came from, and the request it was parsed from, stay as they were."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sdod.jobspec import Channel, parse_job_spec


def _request() -> dict[str, Any]:
    def entry(name: str, **extra: Any) -> dict[str, Any]:
        source = {"S3Uri": f"s3://b/{name}/", "S3DistributionType": "FullyReplicated"}
        return {"ChannelName": name, "DataSource": {"S3DataSource": source}, **extra}

    return {
        "TrainingJobName": "rewrites",
        "HyperParameters": {"num_classes": "3", "num_training_samples": "8"},
        "InputDataConfig": [
            entry("train", ContentType="image/jpeg"),
            {**entry("validation"), "InputMode": "FastFile"},
            entry("model", ContentType="application/x-sagemaker-model"),
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://b/out/"},
        "RoleArn": "arn:aws:iam::1:role/x",
    }


def test_the_spec_keeps_its_own_copy_of_the_request_and_hands_out_new_ones() -> None:
    request = _request()
    spec = parse_job_spec(request)
    request["InputDataConfig"].clear()
    assert len(spec.raw["InputDataConfig"]) == 3
    out = spec.to_request()
    assert out == spec.raw and out is not spec.raw
    assert out["InputDataConfig"][0] is not spec.raw["InputDataConfig"][0]


def test_the_hyperparameters_are_parsed_once_and_go_with_a_changed_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sdod.jobspec import model

    calls: list[dict[str, str]] = []
    real = model.parse_hyperparameters

    def counted(raw: dict[str, str]) -> Any:
        calls.append(raw)
        return real(raw)

    monkeypatch.setattr(model, "parse_hyperparameters", counted)
    spec = parse_job_spec(_request())
    assert calls == []  # parsed when first asked for
    assert spec.hp.num_classes == 3 and spec.hp is spec.hp
    moved = spec.with_checkpoint("s3://b/ckpt/").with_channel_uris({"train": "s3://w/train/"})
    assert moved.hp is spec.hp and len(calls) == 1


def test_ingest_snapshot_changes_only_the_uris_and_a_manifest_s_type() -> None:
    request = _request()
    source = request["InputDataConfig"][0]["DataSource"]["S3DataSource"]
    source.update(S3DataType="ManifestFile", S3Uri="s3://b/train.manifest")
    spec = parse_job_spec(request)
    moved = spec.with_channel_uris({"train": "s3://w/input/train/"})
    entry = moved.raw["InputDataConfig"][0]
    assert entry["DataSource"]["S3DataSource"] == {
        "S3Uri": "s3://w/input/train/", "S3DataType": "S3Prefix",
        "S3DistributionType": "FullyReplicated",
    }  # fmt: skip
    assert moved.channel("train") == Channel(
        "train", "s3://w/input/train/", "image/jpeg", s3_data_type="S3Prefix"
    )
    assert moved.raw["InputDataConfig"][1:] == spec.raw["InputDataConfig"][1:]
    assert spec.raw["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataType"] == (
        "ManifestFile"
    )
    assert parse_job_spec(moved.to_request()) == moved
    with pytest.raises(ValueError, match="no channel nope"):
        spec.with_channel_uris({"nope": "s3://w/"})


def test_packed_channels_are_new_entries_and_a_kept_channel_stays_as_sent() -> None:
    spec = parse_job_spec(_request())
    packed = Channel("train", "s3://w/packed/train/", "application/x-recordio", "File")
    model = spec.channel("model")
    assert model is not None
    derived = spec.with_channels([packed, model]).with_checkpoint("s3://w/checkpoints/")
    assert derived.raw["InputDataConfig"] == [
        {
            "ChannelName": "train",
            "ContentType": "application/x-recordio",
            "InputMode": "File",
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://w/packed/train/"}
            },
        },
        spec.raw["InputDataConfig"][2],
    ]
    assert derived.raw["CheckpointConfig"] == {"S3Uri": "s3://w/checkpoints/"}
    assert derived.checkpoint_uri == "s3://w/checkpoints/" and spec.checkpoint_uri is None
    assert derived.raw["RoleArn"] == spec.raw["RoleArn"]
    assert parse_job_spec(derived.to_request()) == derived
    assert "CheckpointConfig" not in spec.raw and len(spec.raw["InputDataConfig"]) == 3


def test_a_channel_written_out_parses_back_to_itself() -> None:
    channel = Channel(
        "train", "s3://b/t.manifest", "application/x-recordio", "Pipe", ("source-ref", "boxes"),
        "RecordIO", 7, "AugmentedManifestFile", "Gzip",
    )  # fmt: skip
    request = copy.deepcopy(_request())
    request["InputDataConfig"] = [channel.to_request()]
    assert parse_job_spec(request).channels == (channel,)

"""Ingest and pack against a real S3 endpoint (moto's threaded server over HTTP)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sdod import stages, tools
from sdod.demo.dataset import make_sample_data
from sdod.errors import UserError
from tests.integration.conftest import S3Endpoint

pytestmark = pytest.mark.integration


def _spec(name: str, base: str, **extra: object) -> dict:
    channels = [  # SageMaker's image format: image/* content type on all four channels
        {
            "ChannelName": channel,
            "ContentType": "image/jpeg",
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{base}/{channel}/"}
            },
        }
        for channel in ("train", "validation", "train_annotation", "validation_annotation")
    ]
    return {
        "TrainingJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole",
        "AlgorithmSpecification": {"TrainingImage": "x", "TrainingInputMode": "File"},
        "HyperParameters": {"num_classes": "3", "num_training_samples": "6"},
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": f"{base}/output"},
        "ResourceConfig": {
            "InstanceCount": 1,
            "InstanceType": "ml.p3.2xlarge",
            "VolumeSizeInGB": 50,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        **extra,
    }


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def uploaded(
    tmp_path: Path, s3_endpoint: S3Endpoint, request: pytest.FixtureRequest
) -> tuple[Path, str]:
    local = tmp_path / "bucket"
    make_sample_data(local, train=6, validation=2, seed=5)
    return local, s3_endpoint.upload_dir(local, f"data-{request.node.name}")


def test_ingest_copies_every_channel_and_a_rerun_transfers_nothing(
    tmp_path: Path, uploaded: tuple[Path, str]
) -> None:
    local, base = uploaded
    root = tmp_path / "job"
    first = stages.ingest(job_spec=_spec("od-job-1", base), job_root=str(root))
    for channel in ("train", "validation", "train_annotation", "validation_annotation"):
        assert _digest(root / "input" / "data" / channel) == _digest(local / channel)
        assert first.channels[channel]["downloaded"] == first.channels[channel]["objects"]
    config = root / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text())["num_classes"] == "3"
    assert (
        json.loads((config / "inputdataconfig.json").read_text())["train"]["TrainingInputMode"]
        == "File"
    )
    assert first.ignored_fields == ["AlgorithmSpecification.TrainingImage", "RoleArn"]

    second = stages.ingest(job_spec=_spec("od-job-1", base), job_root=str(root))
    assert all(c["downloaded"] == 0 and c["bytes"] == 0 for c in second.channels.values())
    assert second.channels["train"]["skipped"] == 6


def test_changed_and_deleted_objects_are_mirrored(
    tmp_path: Path, uploaded: tuple[Path, str], s3_endpoint: S3Endpoint
) -> None:
    import boto3

    _, base = uploaded
    root = tmp_path / "job"
    stages.ingest(job_spec=_spec("od-job-2", base), job_root=str(root))
    client = boto3.client("s3", endpoint_url=s3_endpoint.url)
    prefix = base.split("/", 3)[3]
    client.put_object(Bucket=s3_endpoint.bucket, Key=f"{prefix}/train/train_00000.jpg", Body=b"new")
    client.delete_object(Bucket=s3_endpoint.bucket, Key=f"{prefix}/train/train_00001.jpg")
    again = stages.ingest(job_spec=_spec("od-job-2", base), job_root=str(root))
    assert (again.channels["train"]["downloaded"], again.channels["train"]["removed"]) == (1, 1)
    assert (root / "input/data/train/train_00000.jpg").read_bytes() == b"new"
    assert not (root / "input/data/train/train_00001.jpg").exists()


def test_pack_after_ingest_reads_the_channels(tmp_path: Path, uploaded: tuple[Path, str]) -> None:
    _, base = uploaded
    root = tmp_path / "job"
    stages.ingest(job_spec=_spec("od-job-3", base), job_root=str(root))
    data = root / "input" / "data"
    result = tools.pack(
        out=str(tmp_path / "rec" / "train"),
        images=str(data / "train"),
        annotations=str(data / "train_annotation"),
    )
    assert result.records == 6


def test_a_prefix_with_no_objects_is_a_clear_error(tmp_path: Path, s3_endpoint: S3Endpoint) -> None:
    spec = _spec("od-job-4", f"s3://{s3_endpoint.bucket}/nothing-here")
    with pytest.raises(UserError, match=r"s3://sdod-test/nothing-here/train/: matches no objects"):
        stages.ingest(job_spec=spec, job_root=str(tmp_path / "job"))


def test_a_missing_bucket_is_a_clear_error(tmp_path: Path, s3_endpoint: S3Endpoint) -> None:
    spec = _spec("od-job-5", "s3://no-such-bucket-sdod/data")
    with pytest.raises(UserError, match="no-such-bucket-sdod"):
        stages.ingest(job_spec=spec, job_root=str(tmp_path / "job"))


def test_a_manifestfile_channel_brings_exactly_the_objects_it_lists(
    s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    """S3DataType ManifestFile: `[{"prefix": ...}, "key", ...]`, in a local job root (File
    mode) and in the work snapshot the DAG reads; a job trains from it."""
    from sdod import stages
    from sdod.demo.dataset import make_sample_data

    make_sample_data(tmp_path / "d", train=6, validation=3, seed=13)
    prefix = s3_endpoint.upload_dir(tmp_path / "d", "manifestfile/data")
    channels = []
    for ch in ("train", "validation", "train_annotation", "validation_annotation"):
        names = sorted(p.name for p in (tmp_path / "d" / ch).iterdir())
        listed = [{"prefix": f"{prefix}/{ch}/"}, *names[:-1]] if ch == "train" else [
            {"prefix": f"{prefix}/{ch}/"}, *names]  # fmt: skip
        if ch == "train_annotation":  # the image left out of train has no annotation either
            listed = [listed[0], *[n for n in names if n != names[-1]]]
        (tmp_path / f"{ch}.json").write_text(json.dumps(listed))
        uri = s3_endpoint.upload_dir(tmp_path, "manifestfile/lists") + f"/{ch}.json"
        channels.append({"ChannelName": ch, "ContentType": "image/jpeg",
                         "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": uri}}})  # fmt: skip
    spec = {"TrainingJobName": "manifestfile-job", "InputDataConfig": channels,
            "HyperParameters": {"base_network": "mobilenet-v3", "use_pretrained_model": "0",
                                "num_classes": "3", "num_training_samples": "5", "epochs": "1",
                                "mini_batch_size": "3"},
            "OutputDataConfig": {"S3OutputPath": f"s3://{s3_endpoint.bucket}/manifestfile/out"}}  # fmt: skip
    root = tmp_path / "job"
    result = stages.ingest(job_spec=spec, job_root=str(root))
    assert result.channels["train"]["objects"] == 5  # 6 uploaded, 5 listed
    assert len(list((root / "input" / "data" / "train").glob("*.jpg"))) == 5
    staged = stages.ingest(job_spec=spec, work_uri=f"s3://{s3_endpoint.bucket}/manifestfile/work")
    assert staged.spec is not None and staged.channels["validation"]["objects"] == 3
    source = staged.spec["InputDataConfig"][0]["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "S3Prefix" and source["S3Uri"].endswith("/input/train/")
    outcome = stages.train(job_root=str(root), log=lambda _: None)
    assert outcome.status == "Completed", outcome.message

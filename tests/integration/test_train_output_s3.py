"""A training job delivers through the object store, as on SageMaker: its model.tar.gz
(Completed or Stopped) or its failure lands at S3OutputPath/<job>/output/, and a job killed
on one machine resumes from the S3 checkpoint on another with an empty disk."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sdod.demo.dataset import make_sample_data
from tests.integration.conftest import S3Endpoint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data_uri(s3_endpoint: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> str:
    local = tmp_path_factory.mktemp("data")
    make_sample_data(local, train=4, validation=2, seed=11)
    return s3_endpoint.upload_dir(local, "train-output/data")


def _spec(name: str, data_uri: str, bucket: str, *, runtime: int = 600, **hp: str) -> dict:
    return {
        "TrainingJobName": name,
        "HyperParameters": {
            "base_network": "mobilenet-v3", "use_pretrained_model": "0", "num_classes": "3",
            "num_training_samples": "4", "epochs": "2", "mini_batch_size": "2",
            "optimizer": "adam", "augmentation": "none", **hp,
        },
        "InputDataConfig": [
            {"ChannelName": ch, "ContentType": "image/jpeg",
             "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{data_uri}/{ch}/"}}}
            for ch in ("train", "validation", "train_annotation", "validation_annotation")
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/train-output/models"},
        "CheckpointConfig": {"S3Uri": f"s3://{bucket}/train-output/checkpoints/{name}/"},
        "StoppingCondition": {"MaxRuntimeInSeconds": runtime},
    }  # fmt: skip


def _keys(s3: S3Endpoint, prefix: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3.url)
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix) :] for o in listed.get("Contents", []))


def _train(spec: dict, root: Path, **popen: Any) -> subprocess.Popen[str]:
    spec_file = root.parent / f"{root.name}.json"
    spec_file.write_text(json.dumps(spec))
    cmd = [sys.executable, "-u", "-m", "sdod", "train", "--job-spec", str(spec_file),
           "--job-root", str(root)]  # fmt: skip
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def test_completed_and_stopped_jobs_upload_the_model_and_failed_jobs_the_reason(
    s3_endpoint: S3Endpoint, data_uri: str, tmp_path: Path
) -> None:
    from sdod.artifact import read_artifact

    done = _train(_spec("out-done", data_uri, s3_endpoint.bucket), tmp_path / "done")
    out = done.communicate(timeout=300)[0]
    assert done.returncode == 0, out
    assert _keys(s3_endpoint, "train-output/models/out-done/") == ["output/model.tar.gz"]
    assert "uploaded to s3://sdod-test/train-output/models/out-done/output/model.tar.gz" in out

    stopped = _train(
        _spec("out-stopped", data_uri, s3_endpoint.bucket, runtime=1, epochs="500"),
        tmp_path / "stopped",
    )
    out = stopped.communicate(timeout=300)[0]
    assert stopped.returncode == 3, out
    assert _keys(s3_endpoint, "train-output/models/out-stopped/") == ["output/model.tar.gz"]
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint.url)
    client.download_file(
        s3_endpoint.bucket, "train-output/models/out-stopped/output/model.tar.gz",
        str(tmp_path / "stopped.tar.gz"),
    )  # fmt: skip
    assert read_artifact(tmp_path / "stopped.tar.gz").metrics["stopped"] is True

    failed = _train(
        _spec("out-failed", data_uri, s3_endpoint.bucket, num_classes="1"), tmp_path / "failed"
    )
    out = failed.communicate(timeout=300)[0]
    assert failed.returncode == 2, out
    assert _keys(s3_endpoint, "train-output/models/out-failed/") == ["output/failure"]
    reason = client.get_object(
        Bucket=s3_endpoint.bucket, Key="train-output/models/out-failed/output/failure"
    )["Body"].read()
    assert b"class_id 1 is not below num_classes=1" in reason


def test_killed_job_resumes_from_the_s3_checkpoint_on_an_empty_disk(
    s3_endpoint: S3Endpoint, data_uri: str, tmp_path: Path
) -> None:
    spec = _spec("resume-s3", data_uri, s3_endpoint.bucket, epochs="8")
    first = _train(spec, tmp_path / "worker-a", start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None:
        if _keys(s3_endpoint, "train-output/checkpoints/resume-s3/") == ["checkpoint.pt"]:
            break
        time.sleep(0.2)
    assert first.poll() is None, "the job ended before its first checkpoint reached S3"
    os.killpg(first.pid, signal.SIGKILL)  # the worker dies with the job
    first.communicate(timeout=60)
    shutil.rmtree(tmp_path / "worker-a")  # and its disk goes with it
    assert _keys(s3_endpoint, "train-output/models/resume-s3/") == []

    second = _train(spec, tmp_path / "worker-b")  # a fresh worker, an empty disk
    out = second.communicate(timeout=300)[0]
    assert second.returncode == 0, out
    prefix = (
        "resuming from checkpoint s3://sdod-test/train-output/checkpoints/resume-s3/checkpoint.pt: "
    )
    line = next(line for line in out.splitlines() if line.startswith(prefix))
    done_before = int(line[len(prefix) :].split()[0])
    assert 1 <= done_before < 8
    epochs = [int(e) for e in re.findall(r"epoch=(\d+), validation mAP", out)]
    assert epochs == list(range(done_before, 8))
    assert _keys(s3_endpoint, "train-output/models/resume-s3/") == ["output/model.tar.gz"]

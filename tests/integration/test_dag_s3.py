"""The whole sdod_train DAG under real Airflow (`dag.test()`) against a real S3 endpoint,
each task starting on an empty disk, as on a fresh worker: the tasks hand over only
through the object store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sdod.demo.dataset import make_sample_data
from tests.integration.conftest import S3Endpoint, load_dag

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TINY_HP = {"base_network": "mobilenet-v3", "use_pretrained_model": "0", "num_classes": "3",
           "num_training_samples": "6", "epochs": "1", "mini_batch_size": "3", "optimizer": "adam",
           "augmentation": "light"}  # fmt: skip


class Wiper:
    """Empties every local folder sdod uses before each task (`pre_execute`)."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders, self.tasks = folders, []

    def __call__(self, context: Any) -> None:
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        self.tasks.append(context["ti"].task_id.split(".")[-1])


@pytest.fixture(scope="module")
def dag(s3_endpoint: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_dag("sdod_train", s3_endpoint, tmp_path_factory.mktemp("cache"))


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id.split(".")[-1]: str(ti.state) for ti in run.get_task_instances()}


def _xcoms(run: Any) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.run_id == run.run_id).all()
        return {f"{r.task_id}.{r.key}": r.value for r in rows}


def _local_strings(value: Any) -> list[str]:
    """Every string in an XCom value that names something on a local disk."""
    if isinstance(value, str):
        try:
            return (
                _local_strings(json.loads(value))
                if value[:1] in "[{"
                else ([value] if value.startswith(("/", "file://")) or os.path.isabs(value) else [])
            )
        except json.JSONDecodeError:
            return []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _local_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _local_strings(v)]
    return []


def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix) :] for o in listed.get("Contents", []))


def test_dag_hands_over_through_s3_only_and_publishes_a_registry_version(
    dag: Any, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    import boto3

    wipe = Wiper([Path(os.environ["SDOD_CACHE_DIR"])])
    for task in dag.tasks:
        task.pre_execute = wipe
    make_sample_data(tmp_path / "good", train=6, validation=3, seed=4)
    good_uri = s3_endpoint.upload_dir(tmp_path / "good", "dag/good")
    bucket = f"s3://{s3_endpoint.bucket}"
    conf = {"job_name": "dag-good", "data_uri": good_uri, "output_uri": f"{bucket}/models",
            "work_uri": f"{bucket}/work", "model_registry_uri": f"{bucket}/registry",
            "hyperparameters": TINY_HP, "min_map": 0.0, "max_runtime_seconds": 600}  # fmt: skip
    run = dag.test(run_conf=conf)
    assert str(run.state) == "success", _states(run)
    assert sorted(wipe.tasks) == sorted(_states(run)), "every task started on an empty disk"

    client = boto3.client("s3", endpoint_url=s3_endpoint.url)
    assert "output/model.tar.gz" in _keys(client, s3_endpoint.bucket, "models/dag-good/")
    check = _keys(client, s3_endpoint.bucket, "models/dag-good/check/")
    assert {"report.json", "quarantine.json"} <= set(check)
    assert any(k.startswith("data_docs/") for k in check)
    evaluation = _keys(client, s3_endpoint.bucket, "models/dag-good/evaluation/")
    assert {"metrics.json", "per_class_ap.csv"} <= set(evaluation)
    packed = _keys(client, s3_endpoint.bucket, "work/dag-good/packed/")
    assert {"train/train.rec", "train/train.idx", "validation/validation.rec"} <= set(packed)
    assert _keys(client, s3_endpoint.bucket, "work/dag-good/checkpoints/") == ["checkpoint.pt"]
    version = _keys(client, s3_endpoint.bucket, "registry/dag-good/")
    assert version == ["v1/approval.json", "v1/metrics.json", "v1/model.tar.gz"]
    approval = json.loads(
        client.get_object(Bucket=s3_endpoint.bucket, Key="registry/dag-good/v1/approval.json")[
            "Body"
        ].read()
    )
    evaluated = json.loads(
        client.get_object(Bucket=s3_endpoint.bucket, Key="models/dag-good/evaluation/metrics.json")[
            "Body"
        ].read()
    )
    assert approval["mAP"] == evaluated["mAP"] and approval["mAP_source"] == "evaluation"
    assert approval["training_job"] == "dag-good" and approval["ModelPackageVersion"] == 1

    xcoms = _xcoms(run)
    assert xcoms, "the run left no XCom"
    assert _local_strings(xcoms) == [], "XCom must hold URIs in the object store, no local path"
    inspect = subprocess.run(
        [sys.executable, "-m", "sdod", "inspect-model", f"{bucket}/registry/dag-good/v1/"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert inspect.returncode == 0, inspect.stderr
    assert "registry: version 1 of dag-good, Approved" in inspect.stdout
    assert "(circle, rectangle, triangle)" in inspect.stdout


def test_dag_stops_on_bad_annotations_and_publishes_nothing(
    dag: Any, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    import boto3

    make_sample_data(tmp_path / "bad", train=6, validation=3, seed=4)
    broken = tmp_path / "bad" / "train_annotation" / "train_00002.json"
    obj = json.loads(broken.read_text())
    obj["annotations"][0]["class_id"] = 7  # num_classes is 3
    broken.write_text(json.dumps(obj))
    bad_uri = s3_endpoint.upload_dir(tmp_path / "bad", "dag/bad")
    bucket = f"s3://{s3_endpoint.bucket}"
    conf = {"job_name": "dag-bad", "data_uri": bad_uri, "output_uri": f"{bucket}/models",
            "work_uri": f"{bucket}/work", "model_registry_uri": f"{bucket}/registry",
            "hyperparameters": TINY_HP, "min_map": 0.0, "max_runtime_seconds": 600}  # fmt: skip
    run = dag.test(run_conf=conf)
    states = _states(run)
    assert str(run.state) == "failed"
    assert states["check_annotations"] == "failed", states
    assert states["train"] != "success" and states["publish"] != "success"
    client = boto3.client("s3", endpoint_url=s3_endpoint.url)
    # the failed check's report is there to read; no model, no registry version
    assert "check/report.json" in _keys(client, s3_endpoint.bucket, "models/dag-bad/")
    assert "output/model.tar.gz" not in _keys(client, s3_endpoint.bucket, "models/dag-bad/")
    assert _keys(client, s3_endpoint.bucket, "registry/dag-bad/") == []


def test_the_form_takes_a_whole_createtrainingjob_request(
    dag: Any, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    """A RecordIO request, as a SageMaker user sends it, trains through the same DAG."""
    import boto3

    from sdod import tools

    make_sample_data(tmp_path / "img", train=6, validation=3, seed=12)
    for ch in ("train", "validation"):
        (tmp_path / "rec" / ch).mkdir(parents=True)
        tools.pack(out=str(tmp_path / "rec" / ch / ch), images=str(tmp_path / "img" / ch),
                    annotations=str(tmp_path / "img" / f"{ch}_annotation"))  # fmt: skip
    prefix = s3_endpoint.upload_dir(tmp_path / "rec", "dag/recordio")
    bucket = f"s3://{s3_endpoint.bucket}"
    request = json.loads((REPO / "include" / "jobs" / "sagemaker-example.json").read_text())
    request["TrainingJobName"] = "dag-request"
    request["HyperParameters"].update({**TINY_HP, "num_training_samples": "6"})
    request["OutputDataConfig"]["S3OutputPath"] = f"{bucket}/models"
    for channel in request["InputDataConfig"]:
        channel["DataSource"]["S3DataSource"]["S3Uri"] = f"{prefix}/{channel['ChannelName']}/"
    conf = {"training_job_request": request, "work_uri": f"{bucket}/work",
            "model_registry_uri": f"{bucket}/registry", "min_map": 0.0}  # fmt: skip
    run = dag.test(run_conf=conf)
    assert str(run.state) == "success", _states(run)
    client = boto3.client("s3", endpoint_url=s3_endpoint.url)
    assert "output/model.tar.gz" in _keys(client, s3_endpoint.bucket, "models/dag-request/")
    assert _keys(client, s3_endpoint.bucket, "registry/dag-request/")[-1] == "v1/model.tar.gz"
    bad = {**request, "HyperParameters": {**request["HyperParameters"], "epochs": "0"}}
    run = dag.test(run_conf={**conf, "training_job_request": bad})
    assert str(run.state) == "failed" and _states(run)["build_spec"] == "failed"

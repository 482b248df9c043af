"""The whole sdod_train DAG under real Airflow (`dag.test()`) against a real S3 endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sdod.data.sampledata import make_sample_data
from tests.integration.conftest import S3Endpoint

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TINY_HP = {"base_network": "mobilenet-v3", "use_pretrained_model": "0", "num_classes": "3",
           "num_training_samples": "6", "epochs": "1", "mini_batch_size": "3", "optimizer": "adam",
           "augmentation": "light"}  # fmt: skip


@pytest.fixture(scope="module")
def dag(s3_endpoint: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = Path(os.environ["AIRFLOW_HOME"])
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": s3_endpoint.url, "region_name": "us-east-1"},
    })  # fmt: skip
    os.environ["SDOD_WORK_DIR"] = str(tmp_path_factory.mktemp("work"))
    if not (home / "airflow.db").exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True
        )
    sys.path.insert(0, str(REPO / "plugins"))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "sdod_train.py"))
    assert bag.import_errors == {}
    return bag.dags["sdod_train"]


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id.split(".")[-1]: str(ti.state) for ti in run.get_task_instances()}


def test_dag_publishes_a_model_from_s3_and_stops_on_bad_annotations(
    dag: Any, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    import boto3

    from sdod.artifact import read_artifact

    make_sample_data(tmp_path / "good", train=6, validation=3, seed=4)
    good_uri = s3_endpoint.upload_dir(tmp_path / "good", "dag/good")
    conf = {"job_name": "dag-good", "data_uri": good_uri, "output_uri": f"s3://{s3_endpoint.bucket}/models",
            "hyperparameters": TINY_HP, "min_map": 0.0, "max_runtime_seconds": 600}  # fmt: skip
    run = dag.test(run_conf=conf)
    assert str(run.state) == "success", _states(run)
    client = boto3.client("s3", endpoint_url=s3_endpoint.url)
    client.download_file(
        s3_endpoint.bucket, "models/dag-good/output/model.tar.gz", str(tmp_path / "m.tar.gz")
    )
    artifact = read_artifact(tmp_path / "m.tar.gz")
    assert artifact.config["class_names"] == ["circle", "rectangle", "triangle"]
    result = subprocess.run([sys.executable, "-m", "sdod", "inspect-model", str(tmp_path / "m.tar.gz")],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr

    make_sample_data(tmp_path / "bad", train=6, validation=3, seed=4)
    broken = tmp_path / "bad" / "train_annotation" / "train_00002.json"
    obj = json.loads(broken.read_text())
    obj["annotations"][0]["class_id"] = 7  # num_classes is 3
    broken.write_text(json.dumps(obj))
    bad_uri = s3_endpoint.upload_dir(tmp_path / "bad", "dag/bad")
    run = dag.test(run_conf={**conf, "job_name": "dag-bad", "data_uri": bad_uri})
    states = _states(run)
    assert str(run.state) == "failed"
    assert states["check_annotations"] == "failed", states
    assert states["train"] != "success" and states["publish"] != "success"
    listed = client.list_objects_v2(Bucket=s3_endpoint.bucket, Prefix="models/dag-bad/")
    assert listed.get("KeyCount", 0) == 0

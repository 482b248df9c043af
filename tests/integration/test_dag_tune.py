"""The sdod_tune DAG under real Airflow (`dag.test()`) against a real S3 endpoint: the data
prepared once, 4 trials in 2 mapped lanes sharing one study, the best one evaluated and
published; XCom carries URIs only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from sdod.demo.dataset import make_sample_data
from tests.integration.conftest import S3Endpoint, load_dag
from tests.integration.test_dag_s3 import _keys, _local_strings, _states, _xcoms

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dag(s3_endpoint: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Any:
    os.environ["SDOD_TUNING_STORAGE"] = f"sqlite:///{tmp_path_factory.mktemp('study')}/s.db"
    return load_dag("sdod_tune", s3_endpoint, tmp_path_factory.mktemp("cache"))


def test_four_trials_two_lanes_then_the_best_is_published(
    dag: Any, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    import boto3
    from sdod_tuning import demo_tuning_request

    make_sample_data(tmp_path / "data", train=6, validation=3, seed=4)
    bucket = f"s3://{s3_endpoint.bucket}"
    data_uri = s3_endpoint.upload_dir(tmp_path / "data", "tune/data")
    request = demo_tuning_request(data_uri, f"{bucket}/models")
    request["HyperParameterTuningJobName"] = "dag-tune"
    request["TrainingJobDefinition"]["StaticHyperParameters"].update(
        num_training_samples="6", epochs="2", mini_batch_size="3"
    )
    conf = {"tuning_job_request": request, "work_uri": f"{bucket}/work",
            "model_registry_uri": f"{bucket}/registry", "min_map": 0.0}  # fmt: skip
    run = dag.test(run_conf=conf)
    states = _states(run)
    assert str(run.state) == "success", states
    lanes = [ti for ti in run.get_task_instances() if ti.task_id.endswith("trial_lane")]
    assert sorted(ti.map_index for ti in lanes) == [0, 1]  # MaxParallelTrainingJobs = 2

    client = boto3.client("s3", endpoint_url=s3_endpoint.url)
    describe = json.loads(
        client.get_object(Bucket=s3_endpoint.bucket, Key="models/dag-tune/describe.json")[
            "Body"
        ].read()
    )
    trials = describe["TrainingJobSummaries"]
    assert len(trials) == 4 and describe["TrainingJobStatusCounters"]["Completed"] + describe[
        "TrainingJobStatusCounters"]["Stopped"] == 4  # fmt: skip
    best = describe["BestTrainingJob"]
    values = [t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for t in trials]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == max(values)
    for t in trials:  # each trial trained from the packed RecordIO, its model in S3OutputPath
        assert "output/model.tar.gz" in _keys(
            client, s3_endpoint.bucket, f"models/{t['TrainingJobName']}/"
        )
    assert _keys(client, s3_endpoint.bucket, "registry/dag-tune/") == [
        "v1/approval.json", "v1/metrics.json", "v1/model.tar.gz"
    ]  # fmt: skip
    approval = json.loads(
        client.get_object(Bucket=s3_endpoint.bucket, Key="registry/dag-tune/v1/approval.json")[
            "Body"
        ].read()
    )
    assert approval["training_job"] == best["TrainingJobName"]
    assert _local_strings(_xcoms(run)) == [], "XCom must hold URIs in the object store"

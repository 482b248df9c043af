"""MLflow tracking against a real `mlflow server` (PostgreSQL backend, artifacts in moto's
S3): a training job's run, the registry mirror, a tuning job's nested runs, a server that
dies half-way, and a screenshot of the run in MLflow's UI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sdod import stages, tools
from sdod.errors import UserError
from tests.integration.conftest import S3Endpoint

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
HP = {
    "base_network": "resnet-lite", "use_pretrained_model": "0", "num_classes": "2",
    "num_training_samples": "4", "epochs": "3", "mini_batch_size": "4", "optimizer": "adam",
    "learning_rate": "0.002", "augmentation": "none",
}  # fmt: skip


@pytest.fixture(scope="module")
def postgres_admin() -> Iterator[Any]:
    import psycopg2

    try:
        admin = psycopg2.connect(
            host="127.0.0.1", user="postgres", dbname="postgres", connect_timeout=3
        )
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL on 127.0.0.1 ({exc})")
    admin.autocommit = True
    yield admin
    admin.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mlflow_server(admin: Any, s3: S3Endpoint, logs: Path) -> Iterator[tuple[str, Any]]:
    """`mlflow server` on a free port with its own database (dropped after) and artifacts
    in the moto bucket; yields its URL and process (its own process group)."""
    db = f"sdod_mlflow_test_{uuid.uuid4().hex[:8]}"
    admin.cursor().execute(f"CREATE DATABASE {db}")
    port = _free_port()
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3.url}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}",
        "--artifacts-destination", f"s3://{s3.bucket}/mlflow/{db}",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    logs.parent.mkdir(parents=True, exist_ok=True)
    with logs.open("w") as out:
        server = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, server, logs)
        yield url, server
    finally:
        _kill(server)
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def _wait_healthy(url: str, server: subprocess.Popen, logs: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, f"mlflow server exited: {logs.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mlflow server did not answer in 120 s: {logs.read_text()[-2000:]}")


def _kill(server: subprocess.Popen) -> None:
    """The server and its workers (its process group)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):  # workers left behind in the group
        os.killpg(server.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(
    postgres_admin: Any, s3_endpoint: S3Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("mlflow") / "server.log"
    with mlflow_server(postgres_admin, s3_endpoint, logs) as (url, _):
        yield url


@pytest.fixture()
def tracking(server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Tracking on (to `server`) in this process and the processes it starts."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")  # restored after the test
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    return MlflowClient(server)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdod.demo.dataset import make_sample_data

    root = tmp_path_factory.mktemp("mlflow-data")
    make_sample_data(root, train=4, validation=2, num_classes=2, seed=11)
    return root


def _spec(name: str, data: Path, output: str, epochs: int = 3) -> Any:
    from sdod.jobspec.form import spec_from_form

    hp = {**HP, "epochs": str(epochs)}
    return spec_from_form(
        job_name=name, data_uri=str(data), output_uri=output, hyperparameters=hp,
        max_runtime_seconds=600,
    )  # fmt: skip


def _runs(client: Any, tag: str, value: str) -> list[Any]:
    experiment = client.get_experiment_by_name("sdod")
    return list(client.search_runs([experiment.experiment_id], f"tags.`{tag}` = '{value}'"))


@pytest.fixture(scope="module")
def trained(
    server: str, data: Path, s3_endpoint: S3Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A tiny training job run with tracking on, its check report in place beforehand."""
    import boto3

    output = f"s3://{s3_endpoint.bucket}/mlflow-test/out"
    report = {"passed": True, "policy": "strict", "images": {"train": 4}, "boxes": {"train": 9},
              "rules": [{"rule": "box_inside", "severity": "warning", "success": False,
                         "count": 1}], "quarantined": []}  # fmt: skip
    boto3.client("s3", endpoint_url=s3_endpoint.url).put_object(
        Bucket=s3_endpoint.bucket, Key="mlflow-test/out/tracked/check/report.json",
        Body=json.dumps(report).encode(),
    )  # fmt: skip
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", server)
        env.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")  # as sdod sets them; restored after
        env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        env.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        env.setenv("SDOD_SEED", "3")
        outcome = stages.train(
            job_spec=_spec("tracked", data, output),
            job_root=str(tmp_path_factory.mktemp("tracked") / "job"), log=lines.append,
        )  # fmt: skip
    return {"outcome": outcome, "lines": lines, "data": data}


def test_a_training_job_is_a_run_with_params_metrics_tags_and_artifacts(
    trained: dict[str, Any], tracking: Any
) -> None:
    outcome = trained["outcome"]
    assert outcome.status == "Completed", trained["lines"][-5:]
    assert not any("MLflow tracking" in line for line in trained["lines"])
    [run] = _runs(tracking, "sagemaker.TrainingJobName", "tracked")
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "3" and run.data.params["base_network"] == "resnet-lite"
    history = tracking.get_metric_history(run.info.run_id, "validation:mAP")
    assert [m.step for m in history] == [0, 1, 2]
    assert run.data.metrics["validation:mAP"] == pytest.approx(history[-1].value)
    assert len(tracking.get_metric_history(run.info.run_id, "train:cross_entropy")) >= 3
    assert "train:smooth_l1" in run.data.metrics and "train:throughput" in run.data.metrics
    tags = run.data.tags
    assert tags["sagemaker.TrainingJobStatus"] == "Completed"
    assert tags["sdod.data.train"].startswith(str(trained["data"] / "train"))
    assert tags["sdod.model_uri"] == outcome.model_uri
    assert tags["sdod.check.passed"] == "True"
    assert tags["sdod.check.failed_rules"] == "warning box_inside: 1"
    files = {f.path for f in tracking.list_artifacts(run.info.run_id)}
    assert {"model.tar.gz", "metrics.json"} <= files


def _write(s3: S3Endpoint, key: str, body: dict[str, Any]) -> str:
    import boto3

    boto3.client("s3", endpoint_url=s3.url).put_object(
        Bucket=s3.bucket, Key=key, Body=json.dumps(body).encode()
    )
    return f"s3://{s3.bucket}/{key}"


def test_a_publish_is_mirrored_and_champion_moves_only_when_approved(
    trained: dict[str, Any], tracking: Any, s3_endpoint: S3Endpoint
) -> None:
    model = trained["outcome"].model_uri
    group = f"s3://{s3_endpoint.bucket}/mlflow-test/registry/ssd-mlflow"
    good = _write(s3_endpoint, "mlflow-test/eval/good.json", {"mAP": 0.5})
    worse = _write(s3_endpoint, "mlflow-test/eval/worse.json", {"mAP": 0.2})
    published = stages.publish(model=model, to=group, evaluation=good, training_job="tracked")
    assert published.published and published.version == 1
    with pytest.raises(UserError, match="below version v1"):
        stages.publish(model=model, to=group, evaluation=worse, training_job="tracked")
    versions = {
        v.version: v for v in tracking.search_model_versions("name = 'ssd-mlflow'")
    }  # fmt: skip
    assert sorted(versions) == ["1", "2"]
    first, second = versions["1"], versions["2"]
    assert first.tags["sdod.approval"] == "Approved" and first.tags["mAP"] == "0.5"
    assert first.tags["sdod.version"] == "1" and first.source == published.model
    assert "evaluation mAP 0.5000" in first.description
    assert second.tags["sdod.approval"] == "Rejected" and second.tags["mAP"] == "0.2"
    assert "below version v1" in second.tags["sdod.reason"]
    [run] = _runs(tracking, "sagemaker.TrainingJobName", "tracked")
    assert first.run_id == run.info.run_id
    assert tracking.get_model_version_by_alias("ssd-mlflow", "champion").version == "1"
    assert "champion" not in (second.aliases or [])


def test_the_sdod_train_dag_records_its_job_and_registers_the_published_version(
    tracking: Any, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    """The whole sdod_train DAG (real Airflow, `dag.test()` in a fresh interpreter, as
    tests/integration/test_lineage.py runs it) with MLFLOW_TRACKING_URI in the workers'
    environment: the train task's job is a run holding the evaluate task's files, the
    publish a registered version with the champion alias, linked to that run."""
    from sdod.demo.dataset import make_sample_data
    from tests.integration.test_dag_s3 import TINY_HP
    from tests.integration.test_lineage import _in_fresh_process

    make_sample_data(tmp_path / "data", train=6, validation=3, seed=4)
    data = s3_endpoint.upload_dir(tmp_path / "data", "mlflow-dag/data")
    bucket = f"s3://{s3_endpoint.bucket}/mlflow-dag"
    conf = {"job_name": "mlflow-dag", "data_uri": data, "output_uri": f"{bucket}/models",
            "work_uri": f"{bucket}/work", "model_registry_uri": f"{bucket}/registry",
            "model_group": "ssd-dag", "hyperparameters": TINY_HP, "min_map": 0.0,
            "max_runtime_seconds": 600}  # fmt: skip
    args = [json.dumps(conf), s3_endpoint.url, s3_endpoint.bucket, str(tmp_path / "cache")]
    log = tmp_path / "dag.log"
    assert _in_fresh_process(args, dict(os.environ), log) == 0, log.read_text()[-4000:]

    [run] = _runs(tracking, "sagemaker.TrainingJobName", "mlflow-dag")
    assert run.info.status == "FINISHED" and run.data.params == {**run.data.params, **TINY_HP}
    epochs = int(TINY_HP["epochs"])
    history = tracking.get_metric_history(run.info.run_id, "validation:mAP")
    assert [m.step for m in history] == list(range(epochs))
    assert {"model.tar.gz", "metrics.json", "evaluation"} <= {
        f.path for f in tracking.list_artifacts(run.info.run_id)
    }
    evaluation = {f.path for f in tracking.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/per_class_ap.csv"} <= evaluation
    assert "evaluation:mAP" in tracking.get_run(run.info.run_id).data.metrics
    champion = tracking.get_model_version_by_alias("ssd-dag", "champion")
    assert champion.version == "1" and champion.run_id == run.info.run_id
    assert champion.tags["sdod.approval"] == "Approved"
    assert champion.tags["sdod.uri"].startswith(f"{bucket}/registry/ssd-dag/v1")


def test_a_tuning_job_is_a_parent_run_with_a_child_per_trial(
    tracking: Any, data: Path, tmp_path: Path
) -> None:
    request = _spec("trial", data, str(tmp_path / "out"), epochs=2)
    tuning = {
        "HyperParameterTuningJobName": "tuned",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random", "RandomSeed": 3,
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:mAP"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
            "ParameterRanges": {"ContinuousParameterRanges": [
                {"Name": "learning_rate", "MinValue": "1e-4", "MaxValue": "1e-2"}]},
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {k: v for k, v in request["HyperParameters"].items()
                                      if k != "learning_rate"},
            **{k: v for k, v in request.items() if k not in ("TrainingJobName", "HyperParameters")},
        },
    }  # fmt: skip
    summary = tools.tune(
        tuning_spec=tuning, work=str(tmp_path / "work"),
        storage=f"sqlite:///{tmp_path / 'studies.db'}", log=lambda _: None,
    )  # fmt: skip
    assert summary["TrainingJobStatusCounters"]["Completed"] == 2
    [parent] = _runs(tracking, "sagemaker.HyperParameterTuningJobName", "tuned")
    children = _runs(tracking, "mlflow.parentRunId", parent.info.run_id)
    names = {t["TrainingJobName"] for t in summary["TrainingJobSummaries"]}
    assert {c.data.tags["sagemaker.TrainingJobName"] for c in children} == names
    assert all(c.info.status == "FINISHED" and "validation:mAP" in c.data.metrics for c in children)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["Strategy"] == "Random"
    best = summary["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    assert parent.data.metrics["validation:mAP"] == pytest.approx(best)
    assert {"describe.json", "objective.png"} <= {
        f.path for f in tracking.list_artifacts(parent.info.run_id)
    }


def test_a_server_that_dies_half_way_costs_the_job_nothing(
    postgres_admin: Any, s3_endpoint: S3Endpoint, data: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import boto3

    output = f"s3://{s3_endpoint.bucket}/mlflow-test/killed"
    lines: list[str] = []
    with mlflow_server(postgres_admin, s3_endpoint, tmp_path / "server.log") as (url, server):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

        def log(line: str) -> None:
            lines.append(line)
            if "epoch=0, validation mAP" in line:  # the first epoch's metrics: the server goes
                _kill(server)

        started = time.monotonic()
        outcome = stages.train(
            job_spec=_spec("orphan", data, output, epochs=4),
            job_root=str(tmp_path / "job"), log=log,
        )  # fmt: skip
        seconds = time.monotonic() - started
    assert server.poll() is not None, "the server was not stopped half-way"
    assert outcome.status == "Completed", lines[-5:]
    said = [line for line in lines if "MLflow tracking at" in line]
    assert len(said) == 1 and "failed; the job goes on without it" in said[0], said
    head = boto3.client("s3", endpoint_url=s3_endpoint.url).head_object(
        Bucket=s3_endpoint.bucket, Key="mlflow-test/killed/orphan/output/model.tar.gz"
    )
    assert head["ContentLength"] > 1000 and str(outcome.model_uri).endswith("model.tar.gz")
    assert seconds < 120


FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
SHOTS = REPO / ".state" / "test-artifacts" / "mlflow"


def test_the_run_in_mlflows_ui(trained: dict[str, Any], tracking: Any, server: str) -> None:
    """The training job's run in MLflow's UI, in Debian's chromium driven by Playwright (as
    tests/deploy/test_ui.py): `.state/test-artifacts/mlflow/mlflow-run.png` (the README's
    docs/mlflow-run.png is a copy)."""
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        message = "Debian's chromium is not installed (make setup installs it when run as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    [run] = _runs(tracking, "sagemaker.TrainingJobName", "tracked")
    url = f"{server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_text("tracked").first.wait_for(timeout=60_000)
            page.get_by_text("validation:mAP").first.wait_for(timeout=60_000)  # its metrics
            page.wait_for_timeout(1500)  # charts and tables settle
            page.screenshot(path=str(SHOTS / "mlflow-run.png"))
        finally:
            browser.close()
    assert (SHOTS / "mlflow-run.png").stat().st_size > 10_000

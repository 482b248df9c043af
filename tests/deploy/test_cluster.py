"""sdod_train on a real Airflow cluster, driven through the stable REST API: Celery workers
on queues `default` and `gpu`, PostgreSQL, Redis, S3 behind a faulty network; a worker
killed with -9, a scheduler restarted mid-run."""

from __future__ import annotations

import io
import signal
import tarfile
import time
from typing import Any

import pytest

from tests.deploy.conftest import BUCKET, Cluster

pytestmark = pytest.mark.deploy
HP = {"base_network": "mobilenet-v3", "use_pretrained_model": "0", "num_classes": "3",
      "num_training_samples": "6", "epochs": "2", "mini_batch_size": "3", "optimizer": "adam",
      "augmentation": "none"}  # fmt: skip
PHASES: dict[str, float] = {}


def _conf(job: str, data: str, **hp: str) -> dict[str, Any]:
    return {"job_name": job, "data_uri": data, "output_uri": f"s3://{BUCKET}/models",
            "hyperparameters": {**HP, **hp}, "min_map": 0.0, "max_runtime_seconds": 900}  # fmt: skip


def _keys(client: Any, prefix: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"][len(prefix) :] for o in listed.get("Contents", []))


def test_the_cluster_starts_from_the_compose_files_commands(cluster: Cluster) -> None:
    PHASES["start-up"] = cluster.startup_seconds  # type: ignore[attr-defined]
    assert set(cluster.procs) == {"api-server", "scheduler", "dag-processor", "triggerer",
                                  "worker-default", "worker-gpu"}  # fmt: skip
    health = cluster.call("GET", "/api/v2/monitor/health").json()
    assert health["metadatabase"]["status"] == "healthy"


def test_bad_params_are_refused_by_the_api_with_the_field_named(
    cluster: Cluster, data: dict[str, str]
) -> None:
    for field, value in (("max_runtime_seconds", 0), ("check_policy", "sometimes")):
        r = cluster.trigger({**_conf("bad-params", data["good"]), field: value})
        assert r.status_code == 400, r.text
        assert field in r.text, r.text


def test_runs_survive_a_faulty_network_and_a_scheduler_restart(
    cluster: Cluster, s3: Any, data: dict[str, str]
) -> None:
    client, proxy = s3
    started = time.monotonic()
    proxy.faulty = True  # 503s, dropped connections and stalls from the first request on
    good = cluster.trigger(_conf("cluster-good", data["good"]))
    bad = cluster.trigger(_conf("cluster-bad", data["bad"]))
    assert good.status_code == 200 and bad.status_code == 200, good.text + bad.text
    good_id, bad_id = good.json()["dag_run_id"], bad.json()["dag_run_id"]

    def training() -> bool:
        return cluster.tasks(good_id).get("train", {}).get("state") == "running"

    cluster.wait_for("the train task to run", training, 400)
    proxy.faulty = False
    cluster.kill("scheduler", signal.SIGTERM)  # restart the scheduler mid-run
    cluster.start("scheduler", "airflow-scheduler")
    assert cluster.wait_run(good_id) == "success", cluster.tasks(good_id)
    assert cluster.wait_run(bad_id) == "failed"
    PHASES["run (faults, scheduler restart)"] = time.monotonic() - started
    assert min(proxy.counts[k] for k in ("503", "dropped", "stalled")) >= 1, proxy.counts

    tasks = cluster.tasks(good_id)
    assert {t: v["state"] for t, v in tasks.items()} == dict.fromkeys(tasks, "success")
    assert tasks["train"]["queue"] == "gpu"
    assert {v["queue"] for t, v in tasks.items() if t != "train"} == {"default"}
    # the train task's files are in the gpu worker's cache only, the others' in the default one
    assert (cluster.caches["gpu"] / "train" / "cluster-good").is_dir()
    assert not (cluster.caches["default"] / "train").exists()
    assert (cluster.caches["default"] / "cluster-good" / "channels").is_dir()
    assert _keys(client, "registry/cluster-good/") == [
        "v1/approval.json", "v1/metrics.json", "v1/model.tar.gz"
    ]  # fmt: skip
    model = client.get_object(Bucket=BUCKET, Key="registry/cluster-good/v1/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(model["Body"].read())) as tar:  # whole, not partial
        assert {"model.safetensors", "metrics.json"} <= set(tar.getnames())

    bad_tasks = cluster.tasks(bad_id)
    assert bad_tasks["check_annotations"]["state"] == "failed"
    assert bad_tasks["publish"]["state"] != "success"
    assert _keys(client, "registry/cluster-bad/") == []
    assert "check/report.json" in _keys(client, "models/cluster-bad/")


def test_a_killed_gpu_worker_is_replaced_and_the_retry_resumes_from_the_checkpoint(
    cluster: Cluster, s3: Any, data: dict[str, str]
) -> None:
    client, _ = s3
    started = time.monotonic()
    run = cluster.trigger(_conf("cluster-kill", data["good"], epochs="12"))
    assert run.status_code == 200, run.text
    run_id = run.json()["dag_run_id"]
    cluster.wait_for(
        "a checkpoint in S3",
        lambda: "checkpoint.pt" in _keys(client, "work/cluster-kill/checkpoints/"),
        400, every=0.5,
    )  # fmt: skip
    assert cluster.tasks(run_id)["train"]["state"] == "running"
    cluster.kill("worker-gpu")  # kill -9 the worker's whole process group
    cluster.start_worker("worker-gpu-2", "airflow-worker-gpu", "gpu")  # a fresh one, empty disk
    assert cluster.wait_run(run_id) == "success", cluster.tasks(run_id)
    PHASES["fault recovery (kill -9 gpu worker)"] = time.monotonic() - started

    train = cluster.tasks(run_id)["train"]
    assert train["try_number"] >= 2
    log = cluster.task_log(run_id, "train", train["try_number"])
    assert "resuming from checkpoint s3://sdod/work/cluster-kill/checkpoints/checkpoint.pt" in log
    delivered = [k for k in _keys(client, "models/") if k.endswith("output/model.tar.gz")]
    assert [k for k in delivered if k.startswith("cluster-kill")] == [
        "cluster-kill/output/model.tar.gz"
    ], delivered  # one model: the killed attempt delivered none
    assert _keys(client, "registry/cluster-kill/") == [
        "v1/approval.json", "v1/metrics.json", "v1/model.tar.gz"
    ]  # fmt: skip
    assert (cluster.caches["gpu"] / "train" / "cluster-kill").is_dir()  # the new worker's disk


def test_phase_times(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print("\ncluster phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in PHASES.items()))
    assert PHASES

"""OpenLineage from sdod_train: the whole DAG under real Airflow (`dag.test()`) against a
real S3 endpoint, with the OpenLineage provider's file transport, then every task's
COMPLETE event read back. The DAG runs in a fresh interpreter: the provider reads its
configuration once per process, and the other DAG tests run with it off."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sdod.demo.dataset import make_sample_data
from tests.integration.conftest import S3Endpoint, load_dag
from tests.integration.test_dag_s3 import TINY_HP

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CHANNELS = ("train", "validation", "train_annotation", "validation_annotation")
RUN = "import sys; from tests.integration.test_lineage import run_dag; run_dag(*sys.argv[1:])"


def _fresh_collectors() -> Any:
    """A listener that gives each task a hook lineage collector of its own, as its own
    process on a worker has (`dag.test()` runs every task in this one): it drops the
    collector once the task's last event is out (`before_stopping` comes after them all)."""
    from airflow.listeners import hookimpl

    class FreshCollectors:
        @hookimpl
        def before_stopping(self, component: Any) -> None:
            from airflow.sdk import lineage

            lineage.get_hook_lineage_collector.cache_clear()

    return FreshCollectors()


def run_dag(conf: str, s3_url: str, bucket: str, cache: str) -> None:
    """In the fresh interpreter: sdod_train with `conf`; exit status 0 when it succeeded.
    It exits at once (`os._exit`): the provider sends the DAG run's events through a
    process pool, which a normal exit waits for."""
    from airflow.sdk.listener import get_listener_manager

    dag = load_dag("sdod_train", S3Endpoint(s3_url, bucket), Path(cache))
    get_listener_manager().add_listener(_fresh_collectors())
    run = dag.test(run_conf=json.loads(conf))
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    print("sdod_train:", run.state, states, flush=True)
    sys.stderr.flush()
    os._exit(0 if str(run.state) == "success" else 1)


def _in_fresh_process(args: list[str], env: dict[str, str], log: Path) -> int | None:
    """`run_dag(*args)` in a new interpreter and session, its output in `log`; its exit
    status (None when it overran). Whatever it started is killed when it is done."""
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", RUN, *args], cwd=REPO, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            return child.wait(timeout=480)
        except subprocess.TimeoutExpired:
            return None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def _completed(events_file: Path) -> dict[str, dict[str, set[str]]]:
    """Task -> {"inputs", "outputs"}: its COMPLETE event's datasets as URIs again."""
    found = {}
    for line in events_file.read_text().splitlines():
        event = json.loads(line)
        job = event["job"]["name"]
        if event.get("eventType") != "COMPLETE" or not job.startswith("sdod_train.sdod."):
            continue
        assert event["job"]["namespace"] == "sdod-lineage-test"
        found[job.rsplit(".", 1)[-1]] = {
            side: {f"{d['namespace']}/{d['name']}" for d in event[side]}
            for side in ("inputs", "outputs")
        }
    return found


def test_each_task_reports_what_it_read_and_wrote(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    make_sample_data(tmp_path / "data", train=6, validation=3, seed=4)
    data = s3_endpoint.upload_dir(tmp_path / "data", "lineage/data")
    bucket = f"s3://{s3_endpoint.bucket}"
    conf = {"job_name": "lineage", "data_uri": data, "output_uri": f"{bucket}/models",
            "work_uri": f"{bucket}/work", "model_registry_uri": f"{bucket}/registry",
            "hyperparameters": TINY_HP, "min_map": 0.0, "max_runtime_seconds": 600}  # fmt: skip
    events = tmp_path / "events.jsonl"
    transport = {"type": "file", "log_file_path": str(events), "append": True}
    env = {**os.environ, "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
           "AIRFLOW__OPENLINEAGE__NAMESPACE": "sdod-lineage-test"}  # fmt: skip
    args = [json.dumps(conf), s3_endpoint.url, s3_endpoint.bucket, str(tmp_path / "cache")]
    log = tmp_path / "dag.log"
    assert _in_fresh_process(args, env, log) == 0, log.read_text()[-4000:]

    work, out = f"{bucket}/work/lineage", f"{bucket}/models/lineage"
    model, metrics = f"{out}/output/model.tar.gz", f"{out}/evaluation/metrics.json"
    sources = {f"{data}/{c}" for c in CHANNELS}
    snapshots = {f"{work}/input/{c}" for c in CHANNELS}
    packed = {f"{work}/packed/train", f"{work}/packed/validation"}
    quarantine = f"{out}/check/quarantine.json"
    assert _completed(events) == {
        "build_spec": {"inputs": set(), "outputs": set()},
        "ingest": {"inputs": sources, "outputs": snapshots},
        "check_annotations": {
            "inputs": snapshots, "outputs": {f"{out}/check/report.json", quarantine}
        },
        "pack_recordio": {"inputs": snapshots | {quarantine}, "outputs": packed},
        "train": {"inputs": packed, "outputs": {model}},
        "evaluate": {"inputs": {model, f"{work}/packed/validation"}, "outputs": {metrics}},
        "publish": {"inputs": {model, metrics}, "outputs": {f"{bucket}/registry/lineage/v1"}},
    }  # fmt: skip


def test_local_paths_are_file_datasets_and_nothing_is_collected_when_off(tmp_path: Path) -> None:
    """Local work folders name `file` datasets by absolute path; with no transport the
    provider registers no lineage reader and `report` builds no collector (that would load
    every provider)."""
    if str(REPO / "plugins") not in sys.path:
        sys.path.insert(0, str(REPO / "plugins"))
    from airflow.sdk import lineage, plugins_manager
    from sdod_lineage import Lineage, operator_lineage, report

    got = operator_lineage(
        Lineage.of([f"{tmp_path}/input/train/", None], ["s3://b/m/model.tar.gz"])
    )
    assert [(d.namespace, d.name) for d in got.inputs] == [("file", f"{tmp_path}/input/train")]
    assert [(d.namespace, d.name) for d in got.outputs] == [("s3://b", "m/model.tar.gz")]
    assert plugins_manager.get_hook_lineage_readers_plugins() == []
    lineage.get_hook_lineage_collector.cache_clear()
    report(lambda: pytest.fail("described although nobody listens"))
    assert lineage.get_hook_lineage_collector.cache_info().currsize == 0

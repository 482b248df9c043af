"""A real S3 endpoint for tests: moto's threaded server over HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sdod.train.outputs import JobOutcome

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    bucket: str

    def upload_dir(self, local: Path, prefix: str) -> str:
        """Upload every file under `local` to s3://bucket/prefix/...; return that URI."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.url)
        for path in sorted(local.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(local).as_posix()}"
                client.upload_file(str(path), self.bucket, key)
        return f"s3://{self.bucket}/{prefix}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _atomic_conditional_puts() -> None:
    """Make moto's conditional PutObject atomic, as S3's is. moto 5.2.5 honours
    `If-None-Match: *` (412 PreconditionFailed when the key exists) but checks and stores
    in two steps on its threaded server, so two racing create-only PUTs could both succeed
    (not seen in 40 rounds of 4 racers: the GIL rarely switches between the steps). S3
    guarantees exactly one wins; serialising the conditional PUTs guarantees it here."""
    import threading

    from moto.s3.responses import S3Response

    if getattr(S3Response.put_object, "_sdod_atomic", False):
        return
    lock, put = threading.Lock(), S3Response.put_object

    def put_object(self: Any) -> Any:
        if self.headers.get("If-None-Match") is None:
            return put(self)
        with lock:
            return put(self)

    put_object._sdod_atomic = True  # type: ignore[attr-defined]
    S3Response.put_object = put_object  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    from moto.server import ThreadedMotoServer

    _atomic_conditional_puts()

    saved = {k: os.environ.get(k) for k in [*AWS_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(AWS_ENV)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = url  # botocore/s3fs pick the endpoint up from here
    import boto3

    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="sdod-test")
    try:
        yield S3Endpoint(url, "sdod-test")
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_dag(dag_id: str, s3_endpoint: S3Endpoint, cache: Path) -> Any:
    """`dags/<dag_id>.py` parsed by Airflow's DagBag, its AWS connection pointed at the S3
    endpoint, its local cache at `cache`, the Airflow database migrated once."""
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": s3_endpoint.url, "region_name": "us-east-1"},
    })  # fmt: skip
    os.environ["SDOD_CACHE_DIR"] = str(cache)
    if not (Path(os.environ["AIRFLOW_HOME"]) / "airflow.db").exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True
        )
    if str(repo / "plugins") not in sys.path:
        sys.path.insert(0, str(repo / "plugins"))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(repo / "dags" / f"{dag_id}.py"))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


def train_memoriser(root: Path, *, num_classes: int, epochs: int, seed: int) -> JobOutcome:
    """A real training job that learns 4 sample images by heart (validation = train, so the
    best-by-validation weights are the memorised ones), from fixed initial weights
    (`SDOD_SEED`) however the suite runs. Data in `root/data`, the job in `root/job`; returns
    the job's outcome."""
    import shutil

    from sdod import stages
    from sdod.demo.dataset import make_sample_data
    from sdod.jobspec.form import spec_from_form

    data = root / "data"
    make_sample_data(data, train=4, validation=1, num_classes=num_classes, seed=11)
    for channel in ("validation", "validation_annotation"):
        shutil.rmtree(data / channel)
        shutil.copytree(data / channel.replace("validation", "train"), data / channel)
    hp = {
        "base_network": "resnet-lite", "use_pretrained_model": "0",
        "num_classes": str(num_classes), "num_training_samples": "4", "epochs": str(epochs),
        "mini_batch_size": "4", "optimizer": "adam", "learning_rate": "0.002",
        "augmentation": "none",
    }  # fmt: skip
    spec = spec_from_form(
        job_name="memorise", data_uri=str(data), output_uri=str(root / "memorised"),
        hyperparameters=hp, max_runtime_seconds=3600,  # epochs end it, never the clock
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SDOD_SEED", str(seed))
        return stages.train(job_spec=spec, job_root=str(root / "job"), log=lambda _: None)

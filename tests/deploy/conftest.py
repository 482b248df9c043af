"""A real Airflow cluster as separate processes, configured from docker-compose.yaml.

api-server, scheduler, dag-processor, triggerer and two Celery workers (queues `default`
and `gpu`), each started with its compose service's `command`, under the compose file's
own `x-airflow-common.environment` with the host names mapped to this machine: the
metadata database in a fresh PostgreSQL database, the broker in a fresh Redis DB index,
S3 from moto's server behind a fault-injecting proxy, the execution API on a free port.
Each worker has its own empty working folder; the workers share only the database, the
broker and the object store (and, as in the compose file, the task-log folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
BIN = Path(sys.executable).parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
REDIS = ("127.0.0.1", 6379)
USER, PASSWORD = "airflow", "airflow"
BUCKET = "sdod"  # the bucket compose's minio-init creates
# test-only settings: a dead worker is noticed in seconds and retried at once
FAST = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "2",
    "AIRFLOW__CORE__PARALLELISM": "8",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
    "SDOD_DATA_WORKERS": "0",
}


_PRCTL = __import__("ctypes").CDLL(None).prctl  # loaded here: the forked child only calls it


def _die_with_pytest() -> None:
    """In each cluster process before exec: SIGTERM it when the test process dies (a killed
    or timed-out pytest must not leave an Airflow cluster running)."""
    _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def service_command(name: str) -> list[str]:
    """What a compose service runs: the image's entrypoint (`airflow`) and its command."""
    return ["airflow", *shlex.split(compose()["services"][name]["command"])]


def mapped_env(*, db: str, redis_db: int, api_port: int, s3_url: str) -> dict[str, str]:
    """The compose file's environment block, its host names mapped to local ports."""
    env = {
        k: re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m[1], m[2]), str(v))
        for k, v in compose()["x-airflow-common"]["environment"].items()
    }
    swaps = {
        "@postgres/airflow": f"@127.0.0.1:5432/{db}",
        "redis://:@redis:6379/0": f"redis://:@127.0.0.1:6379/{redis_db}",
        "http://airflow-apiserver:8080": f"http://127.0.0.1:{api_port}",
        "http://minio:9000": s3_url,
        "/opt/sdod/": f"{REPO}/",
    }
    for key, value in env.items():
        for old, new in swaps.items():
            value = value.replace(old, new)
        env[key] = value
    env.pop("MLFLOW_TRACKING_URI", None)  # no MLflow server here (tests/integration/test_mlflow.py)
    return env


def services_reachable() -> str | None:
    """None when PostgreSQL and Redis answer on 127.0.0.1, else what is missing."""
    for what, address in (("PostgreSQL", (PG["host"], PG["port"])), ("Redis", REDIS)):
        try:
            socket.create_connection(address, timeout=2).close()
        except OSError:
            return f"{what} is not running on {address[0]}:{address[1]}"
    return None


@pytest.fixture(scope="session")
def services() -> None:
    missing = services_reachable()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the cluster test needs PostgreSQL and Redis: {missing}")
        pytest.skip(f"the cluster test needs PostgreSQL and Redis: {missing}")


@pytest.fixture(scope="session")
def postgres_db(services: None) -> Iterator[str]:
    """A fresh database owned by the compose file's `airflow` role; dropped after."""
    import psycopg2

    name = f"sdod_cluster_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(**PG)
    admin.autocommit = True
    with admin.cursor() as cur:  # databases a killed run left behind, no longer in use
        cur.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'sdod_cluster_%' AND datname "
            "NOT IN (SELECT datname FROM pg_stat_activity WHERE datname IS NOT NULL)"
        )
        for (stale,) in cur.fetchall():
            cur.execute(f'DROP DATABASE IF EXISTS "{stale}"')
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (USER,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE ROLE {USER} LOGIN PASSWORD %s", (PASSWORD,))
        cur.execute(f'CREATE DATABASE "{name}" OWNER {USER}')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture(scope="session")
def redis_db(services: None) -> Iterator[int]:
    """An empty Redis DB index of this run; flushed after."""
    import redis

    for index in range(15, 0, -1):
        client = redis.Redis(host=REDIS[0], port=REDIS[1], db=index)
        if client.dbsize() == 0 and client.set("sdod-cluster-claim", "1", nx=True):
            break
    else:
        pytest.fail("no empty Redis DB index (1-15) on 127.0.0.1:6379")
    try:
        yield index
    finally:
        client.flushdb()


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    api: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    caches: dict[str, Path] = field(default_factory=dict)
    _token: str | None = None

    def start(
        self, name: str, service: str, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        """Start compose service `service` as process `name` (own folder, own log)."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        cmd = service_command(service)
        cmd[0] = str(BIN / "airflow")
        log = (self.root / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [*cmd, *extra], cwd=folder, env={**self.env, **(env or {})}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_pytest,
        )  # fmt: skip

    def start_worker(self, name: str, service: str, queue: str) -> None:
        cache = self.root / name / "cache"  # this worker's only disk: empty at its start
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        self.caches[queue] = cache
        port = str(free_port())
        self.start(
            name, service, "--celery-hostname", f"{name}@%h",
            env={"SDOD_CACHE_DIR": str(cache), "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": port},
        )  # fmt: skip

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=120)

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            self.procs.pop(name)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    # --- the REST API, as a user drives it ------------------------------------------

    def token(self) -> str:
        import httpx

        if self._token is None:
            r = httpx.post(f"{self.api}/auth/token", json={"username": USER, "password": PASSWORD})
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def call(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.token()}", **kw.pop("headers", {})}
        return httpx.request(method, f"{self.api}{path}", headers=headers, timeout=60, **kw)

    def wait_for(self, what: str, check: Any, timeout: float, every: float = 2.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"{name} exited ({proc.returncode}):\n{self.log(name)[-3000:]}"
                    )
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def trigger(self, conf: dict[str, Any]) -> Any:
        return self.call("POST", "/api/v2/dags/sdod_train/dagRuns",
                         json={"logical_date": None, "conf": conf})  # fmt: skip

    def run_state(self, run_id: str) -> str:
        r = self.call("GET", f"/api/v2/dags/sdod_train/dagRuns/{run_id}")
        r.raise_for_status()
        return str(r.json()["state"])

    def tasks(self, run_id: str) -> dict[str, dict[str, Any]]:
        r = self.call("GET", f"/api/v2/dags/sdod_train/dagRuns/{run_id}/taskInstances")
        r.raise_for_status()
        return {t["task_id"].split(".")[-1]: t for t in r.json()["task_instances"]}

    def wait_run(self, run_id: str, timeout: float = 600) -> str:
        return str(self.wait_for(
            f"run {run_id} to finish",
            lambda: (s := self.run_state(run_id)) in ("success", "failed") and s,
            timeout,
        ))  # fmt: skip

    def task_log(self, run_id: str, task: str, try_number: int) -> str:
        r = self.call(
            "GET",
            f"/api/v2/dags/sdod_train/dagRuns/{run_id}/taskInstances/sdod.{task}/logs/{try_number}",
            headers={"Accept": "application/json"},
        )
        r.raise_for_status()
        content = r.json().get("content", "")
        if isinstance(content, list):
            return "\n".join(e.get("event", "") if isinstance(e, dict) else str(e) for e in content)
        return str(content)


@pytest.fixture(scope="session")
def s3(services: None) -> Iterator[Any]:
    """moto's S3 server and, in front of it, the fault proxy the workers talk to."""
    from moto.server import ThreadedMotoServer

    from tests.deploy.faultproxy import FaultProxy

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[key] = "minioadmin"
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    import boto3

    client = boto3.client("s3", endpoint_url=url)
    client.create_bucket(Bucket=BUCKET)
    with FaultProxy(url) as proxy:
        yield client, proxy
    server.stop()


@pytest.fixture(scope="session")
def cluster(
    postgres_db: str, redis_db: int, s3: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    _, proxy = s3
    root = tmp_path_factory.mktemp("cluster")
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SDOD_"))}
    passwords = root / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    env.update(mapped_env(db=postgres_db, redis_db=redis_db, api_port=api_port, s3_url=proxy.url))
    env.update(FAST)
    env.update({
        "AIRFLOW_HOME": str(root / "home"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(root / "logs"),  # compose: the airflow-logs volume
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "PATH": f"{BIN}:{env.get('PATH', '')}",
    })  # fmt: skip
    started = time.monotonic()
    migrate = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, cwd=root,
                             capture_output=True, text=True)  # fmt: skip
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    c = Cluster(root, env, f"http://127.0.0.1:{api_port}")
    try:
        c.start("api-server", "airflow-apiserver", "--port", str(api_port))
        c.start("scheduler", "airflow-scheduler")
        c.start("dag-processor", "airflow-dag-processor")
        c.start("triggerer", "airflow-triggerer")
        c.start_worker("worker-default", "airflow-worker", "default")
        c.start_worker("worker-gpu", "airflow-worker-gpu", "gpu")

        def up() -> bool:
            import httpx

            try:
                health = httpx.get(f"{c.api}/api/v2/monitor/health", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return False
            return health.get("scheduler", {}).get("status") == "healthy"

        c.wait_for("the API server and a healthy scheduler", up, 240)
        c.wait_for("sdod_train to be parsed",
                   lambda: c.call("GET", "/api/v2/dags/sdod_train").status_code == 200, 240)  # fmt: skip
        r = c.call("PATCH", "/api/v2/dags/sdod_train", json={"is_paused": False})
        assert r.status_code == 200, r.text
        c.startup_seconds = time.monotonic() - started  # type: ignore[attr-defined]
        yield c
    finally:
        c.stop_all()


@pytest.fixture(scope="session")
def data(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from sdod.demo.dataset import make_sample_data

    client, _ = s3
    root = tmp_path_factory.mktemp("cluster-data")
    make_sample_data(root / "good", train=6, validation=3, seed=21)
    make_sample_data(root / "bad", train=6, validation=3, seed=21)
    broken = root / "bad" / "train_annotation" / "train_00001.json"
    obj = json.loads(broken.read_text())
    obj["annotations"][0]["class_id"] = 9  # num_classes is 3
    broken.write_text(json.dumps(obj))

    def upload(local: Path, prefix: str) -> str:
        for path in sorted(local.rglob("*")):
            if path.is_file():
                client.upload_file(
                    str(path), BUCKET, f"{prefix}/{path.relative_to(local).as_posix()}"
                )
        return f"s3://{BUCKET}/{prefix}"

    return {"good": upload(root / "good", "data/good"), "bad": upload(root / "bad", "data/bad")}

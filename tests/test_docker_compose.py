"""docker-compose.yaml: Compose-spec shape, the Airflow 3 services, healthchecks, the GPU worker.

Where the Compose plugin exists, `docker compose config` validates the file against the
Compose specification; this machine kind has only the Docker client, so the structural
checks below run everywhere.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yaml"
SERVICE_KEYS = {"image", "build", "command", "entrypoint", "environment", "ports", "expose", "volumes",
                "healthcheck", "restart", "depends_on", "deploy", "user"}  # fmt: skip
AIRFLOW = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
           "airflow-worker", "airflow-worker-gpu"]  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="no `docker compose` plugin on this machine")
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_services_follow_the_compose_spec_shape(compose: dict[str, Any]) -> None:
    assert set(compose) <= {"name", "services", "volumes", "networks", "x-airflow-common"}
    for name, service in compose["services"].items():
        assert set(service) <= SERVICE_KEYS, (name, set(service) - SERVICE_KEYS)
        assert "image" in service or "build" in service, name
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in compose["services"], (name, dep)
            assert cond["condition"] in (
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            )
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in compose["volumes"], (name, source)


def test_airflow_services_and_minio_have_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in [*AIRFLOW, "postgres", "redis", "minio"]:
        check = services[name]["healthcheck"]["test"]
        assert check[0] in ("CMD", "CMD-SHELL") and len(check) >= 2, name
    assert {"airflow-init", "minio-init"} <= set(services)
    assert services["airflow-apiserver"]["command"] == "api-server"
    assert services["airflow-dag-processor"]["command"] == "dag-processor"


def _shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a `/bin/sh -c "a && b"` entrypoint, as argv lists."""
    words = shlex.split(script)
    body = words[words.index("-c") + 1] if "-c" in words else script
    return [shlex.split(part) for part in body.replace("&&", ";").split(";") if part.strip()]


def test_minio_init_creates_the_bucket_the_work_and_registry_uris_name(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    env = compose["x-airflow-common"]["environment"]
    buckets = {
        env[k][len("s3://") :].split("/")[0] for k in ("SDOD_WORK_URI", "SDOD_MODEL_REGISTRY_URI")
    }
    commands = _shell_commands(services["minio-init"]["entrypoint"])
    alias = next(c for c in commands if c[:3] == ["mc", "alias", "set"])
    made = {
        c[-1].split("/", 1)[1]
        for c in commands
        if c[:2] == ["mc", "mb"] and c[-1].startswith(f"{alias[3]}/")
    }
    assert buckets <= made, (buckets, made)
    # the alias points at the minio service with its root credentials
    minio = services["minio"]
    assert urlparse(alias[4]).hostname == "minio"
    assert alias[5:7] == [
        minio["environment"]["MINIO_ROOT_USER"],
        minio["environment"]["MINIO_ROOT_PASSWORD"],
    ]


def test_gpu_worker_reserves_nvidia_devices_and_serves_the_gpu_queue(
    compose: dict[str, Any],
) -> None:
    gpu = compose["services"]["airflow-worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # training tasks go to SDOD_TRAIN_QUEUE, which only the GPU worker serves; every other
    # task goes to Airflow's default queue, which the CPU worker serves
    default_queue = env.get("AIRFLOW__OPERATORS__DEFAULT_QUEUE", "default")
    assert _queues(gpu["command"]) == {env["SDOD_TRAIN_QUEUE"]} != {default_queue}
    assert _queues(compose["services"]["airflow-worker"]["command"]) == {default_queue}


def _queues(command: str) -> set[str]:
    """The queues a `celery worker -q a,b` command serves."""
    argv = shlex.split(command)
    assert argv[:2] == ["celery", "worker"], argv
    flag = next(i for i, w in enumerate(argv) if w in ("-q", "--queues"))
    return set(argv[flag + 1].split(","))


def test_the_aws_connection_reaches_minio_with_its_credentials(compose: dict[str, Any]) -> None:
    env = compose["x-airflow-common"]["environment"]
    conn = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    minio = compose["services"]["minio"]
    endpoint = urlparse(conn["extra"]["endpoint_url"])
    listen = shlex.split(minio["command"])
    port = (
        int(listen[listen.index("--address") + 1].rsplit(":", 1)[1])
        if "--address" in listen
        else 9000
    )
    assert (conn["conn_type"], endpoint.hostname, endpoint.port) == ("aws", "minio", port)
    assert (conn["login"], conn["password"]) == (
        minio["environment"]["MINIO_ROOT_USER"],
        minio["environment"]["MINIO_ROOT_PASSWORD"],
    )


DOCKERFILE = COMPOSE.parent / "Dockerfile"
BIN = Path(sys.executable).parent


def _dockerfile_steps() -> list[tuple[str, Any]]:
    """(instruction, its words) for each line of the Dockerfile (continuations joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    steps: list[tuple[str, Any]] = []
    for line in text.splitlines():
        verb, _, rest = line.strip().partition(" ")
        if verb == "COPY":
            steps.append((verb, shlex.split(rest)))
        elif verb == "RUN":
            steps.append((verb, rest))
    return steps


def argv_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def _entrypoint() -> list[str]:
    """What the Dockerfile's ENTRYPOINT runs for a compose `command`: `sdod.entrypoint`
    hands every command but SageMaker's `train`/`serve` to airflow
    (tests/integration/test_container.py runs that dispatch)."""
    line = next(x for x in DOCKERFILE.read_text().splitlines() if x.startswith("ENTRYPOINT"))
    words = json.loads(line[len("ENTRYPOINT") :])
    words = words[words.index("--") + 1 :] if "--" in words else words
    return ["airflow"] if words == ["python", "-m", "sdod.entrypoint"] else words


def _service_commands(compose: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(service, argv) of every Airflow service's command and health check."""
    out = []
    for name, service in compose["services"].items():
        if service.get("image") != "sdod-airflow:latest":
            continue
        if "command" in service and "entrypoint" not in service:
            out.append((name, [*_entrypoint(), *shlex.split(service["command"])]))
        check = service.get("healthcheck", {}).get("test", [])
        if check[:1] == ["CMD"]:
            out.append((f"{name} healthcheck", check[1:]))
        elif check[:1] == ["CMD-SHELL"]:
            first = shlex.split(check[1].split("||")[0])
            out.append((f"{name} healthcheck", first))
    return out


def test_the_image_is_built_from_the_dockerfile_with_airflow_as_entrypoint(
    compose: dict[str, Any],
) -> None:
    assert compose["x-airflow-common"]["build"]["dockerfile"] == "Dockerfile"
    steps = _dockerfile_steps()
    copied = [w for verb, words in steps if verb == "COPY" for w in words[:-1]]
    installs = [
        shlex.split(words) for verb, words in steps if verb == "RUN" and "pip install" in words
    ]
    pins = next(argv for argv in installs if "-r" in argv)
    # the pinned requirements, constrained by the lock, both copied in before the install
    assert (
        argv_value(pins, "-r") == "requirements.txt"
        and argv_value(pins, "-c") == "requirements.lock"
    )
    assert {"requirements.txt", "requirements.lock", "sdod"} <= set(copied)
    assert any(argv_value(argv, "-e") == "." for argv in installs)  # sdod itself, editable
    assert _entrypoint() == ["airflow"]
    pins = (COMPOSE.parent / "requirements.txt").read_text()
    for need in ("apache-airflow-providers-celery==", "psycopg2-binary==", "redis==", "asyncpg=="):
        assert need in pins, need


def test_every_command_and_health_check_the_compose_services_run_exists_here(
    compose: dict[str, Any],
) -> None:
    """Each service's argv, run with `--help` (airflow) or resolved (other programs) in
    this environment: a missing provider or program fails here, not in production."""
    commands = _service_commands(compose)
    assert {name for name, _ in commands} >= {*AIRFLOW, *(f"{s} healthcheck" for s in AIRFLOW)}
    for name, argv in commands:
        program = BIN / argv[0]
        assert program.exists() or shutil.which(argv[0]), f"{name}: {argv[0]} is not installed"
        if argv[0] == "airflow":
            words = [w for w in argv[1:] if not w.startswith("-")][:2]
            if words[:1] == ["celery"]:
                words = words[:2]
            elif words[:1] == ["jobs"]:
                words = ["jobs", "check"]
            else:
                words = words[:1]
            run = subprocess.run([str(program), *words, "--help"], capture_output=True, text=True)
            assert run.returncode == 0, f"{name}: airflow {' '.join(words)}: {run.stderr[-500:]}"
        elif argv[0] == "celery":
            app = argv[argv.index("--app") + 1]
            module = app.rsplit(".", 1)[0]
            run = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                                 text=True)  # fmt: skip
            assert run.returncode == 0, f"{name}: {module}: {run.stderr[-500:]}"
        elif argv[0] == "python":
            compile(argv[2], name, "exec")


def test_workers_share_no_disk_only_the_object_store(compose: dict[str, Any]) -> None:
    """Tasks hand over through S3: no volume may be mounted by two Airflow services except
    the logs, and the work and registry locations are in the bucket MinIO creates."""
    services = compose["services"]
    mounted: dict[str, set[str]] = {}
    for name in AIRFLOW:
        for volume in services[name].get("volumes", []):
            mounted.setdefault(volume.split(":")[0], set()).add(name)
    shared = {v for v, users in mounted.items() if len(users) > 1} - {"airflow-logs"}
    assert shared == set(), f"volumes shared by Airflow services: {shared}"
    env = compose["x-airflow-common"]["environment"]
    assert env["SDOD_WORK_URI"].startswith("s3://sdod/")
    assert env["SDOD_MODEL_REGISTRY_URI"].startswith("s3://sdod/")

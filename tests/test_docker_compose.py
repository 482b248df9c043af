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
    assert "mc mb --ignore-existing local/sdod" in services["minio-init"]["entrypoint"]


def test_gpu_worker_reserves_nvidia_devices_and_serves_the_gpu_queue(
    compose: dict[str, Any],
) -> None:
    gpu = compose["services"]["airflow-worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert gpu["command"].split()[:4] == ["celery", "worker", "-q", "gpu"]
    assert compose["services"]["airflow-worker"]["command"].endswith("-q default")
    env = compose["x-airflow-common"]["environment"]
    assert env["SDOD_TRAIN_QUEUE"] == "gpu" and env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "http://minio:9000" in env["AIRFLOW_CONN_AWS_DEFAULT"]


DOCKERFILE = COMPOSE.parent / "Dockerfile"
BIN = Path(sys.executable).parent


def _entrypoint() -> list[str]:
    """What the Dockerfile's ENTRYPOINT runs for a compose `command`: `sdod.container`
    hands every command but SageMaker's `train`/`serve` to airflow
    (tests/integration/test_container.py runs that dispatch)."""
    line = next(x for x in DOCKERFILE.read_text().splitlines() if x.startswith("ENTRYPOINT"))
    words = json.loads(line[len("ENTRYPOINT") :])
    words = words[words.index("--") + 1 :] if "--" in words else words
    return ["airflow"] if words == ["python", "-m", "sdod.container"] else words


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
    text = DOCKERFILE.read_text()
    assert "pip install --no-cache-dir -r requirements.txt -c requirements.lock" in text
    assert "-e ." in text and _entrypoint() == ["airflow"]
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

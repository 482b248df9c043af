"""The environment is read in one place, each bad value refused with its rule."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from sdod.errors import UserError
from sdod.settings import ContainerSettings, RuntimeSettings, SiteSettings


def test_values_are_read_and_typed() -> None:
    s = RuntimeSettings.from_env({
        "SDOD_SEED": "7", "SDOD_DATA_WORKERS": "0", "SDOD_TRAINING_SLOTS": "3",
        "SDOD_SLOT_DIR": "/x/slots", "SDOD_RDZV_ENDPOINT": "host-1:29400",
        "SDOD_PRETRAINED_DIR": "/w", "TORCH_HOME": "/t", "SDOD_NO_DOWNLOAD": "1",
    })  # fmt: skip
    assert (s.seed, s.data_workers, s.training_slots) == (7, 0, 3)
    assert s.slot_dir == Path("/x/slots") and s.rdzv_endpoint == "host-1:29400"
    assert s.pretrained_dir == Path("/w") and s.torch_home == Path("/t") and s.no_download


def test_unset_means_the_defaults() -> None:
    s = RuntimeSettings.from_env({})
    assert s == RuntimeSettings() and s.seed is None and s.training_slots == 1
    assert not RuntimeSettings.from_env({"SDOD_NO_DOWNLOAD": "0"}).no_download


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("SDOD_SEED", "abc", "SDOD_SEED must be an integer"),
        ("SDOD_DATA_WORKERS", "-1", "SDOD_DATA_WORKERS must be a whole number >= 0"),
        ("SDOD_TRAINING_SLOTS", "0", "SDOD_TRAINING_SLOTS must be a positive integer"),
        ("SDOD_TRAINING_SLOTS", "two", "SDOD_TRAINING_SLOTS must be a positive integer"),
    ],
)
def test_bad_values_name_the_variable_and_the_rule(name: str, value: str, rule: str) -> None:
    with pytest.raises(UserError, match=rule):
        RuntimeSettings.from_env({name: value})


def test_the_site_defaults_all_live_under_the_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = SiteSettings.from_env({})
    state = tmp_path / ".state"  # absolute: the URIs are handed to other processes
    assert s.state_dir == state and s.work_uri == str(state / "work")
    assert s.model_registry_uri == str(state / "registry")
    assert s.tuning_storage == f"sqlite:///{state / 'tuning.db'}"
    assert s.demo_data_uri == s.retrain_data_uri == str(state / "demo" / "bucket")
    assert s.retrain_output_uri == str(state / "retrain" / "output")
    assert s.train_queue == "default" and s.cache_dir.name.startswith("sdod-cache-")
    moved = SiteSettings.from_env({"SDOD_STATE_DIR": "/srv/sdod"})
    assert moved.work_uri == "/srv/sdod/work" and moved.model_registry_uri == "/srv/sdod/registry"


def test_site_values_are_read() -> None:
    s = SiteSettings.from_env({
        "SDOD_WORK_URI": "s3://b/work", "SDOD_MODEL_REGISTRY_URI": "s3://b/registry",
        "SDOD_TUNING_STORAGE": "postgresql://db/t", "SDOD_CACHE_DIR": "/c",
        "SDOD_TRAIN_QUEUE": "gpu", "SDOD_RETRAIN_DATA_URI": "s3://b/data",
        "SDOD_RETRAIN_OUTPUT_URI": "s3://b/out",
    })  # fmt: skip
    assert (s.work_uri, s.model_registry_uri) == ("s3://b/work", "s3://b/registry")
    assert (s.tuning_storage, s.cache_dir) == ("postgresql://db/t", Path("/c"))
    assert s.train_queue == "gpu"
    assert (s.retrain_data_uri, s.retrain_output_uri) == ("s3://b/data", "s3://b/out")


def test_container_settings() -> None:
    assert ContainerSettings.from_env({}) == ContainerSettings(Path("/opt/ml"), "sagemaker-job")
    s = ContainerSettings.from_env({
        "SDOD_SAGEMAKER_ROOT": "/x", "TRAINING_JOB_NAME": "j", "SDOD_MAX_RUNTIME_SECONDS": "60",
    })  # fmt: skip
    assert s == ContainerSettings(Path("/x"), "j", 60)
    with pytest.raises(UserError, match="SDOD_MAX_RUNTIME_SECONDS must be a positive integer"):
        ContainerSettings.from_env({"SDOD_MAX_RUNTIME_SECONDS": "0"})


READ_ELSEWHERE = {  # not settings: nobody sets these by hand
    # test hooks, read at each fault point on purpose
    "sdod/faults.py": {"SDOD_PAUSE_AT", "SDOD_FAIL_AT", "SDOD_PAUSE_SECONDS"},
    # the HTTP server's hand-over to its own worker processes
    "sdod/serve/server.py": {"SDOD_SERVE_SPEC"},
}


def test_no_module_but_settings_names_an_sdod_variable() -> None:
    """A variable's name written as a string anywhere else is a second place reading it
    (and soon a second default): sdod, the plugins and the DAGs take it from settings."""
    root = Path(__file__).resolve().parents[3]
    found = {}
    for folder in ("sdod", "plugins", "dags"):
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            names = {
                node.value
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
                and re.fullmatch(r"SDOD_[A-Z0-9_]+", node.value)
            }  # fmt: skip
            names -= READ_ELSEWHERE.get(rel, set())
            if names and rel != "sdod/settings.py":
                found[rel] = sorted(names)
    assert not found, f"read these through sdod.settings: {found}"

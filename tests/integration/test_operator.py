"""SSDTrainingOperator with real subprocesses: Completed, Stopped, Failed, on_kill."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sdod.demo.dataset import make_sample_data

pytestmark = pytest.mark.integration
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_sample_data(root, train=4, validation=2, num_classes=2, seed=3)
    return root


def _config(data: Path, name: str, *, runtime: int = 600, **hp: str) -> dict[str, Any]:
    from sdod.jobspec.form import spec_from_form

    return spec_from_form(
        job_name=name, data_uri=str(data), output_uri=str(data / "out"), max_runtime_seconds=runtime,
        hyperparameters={"base_network": "mobilenet-v3", "use_pretrained_model": "0", "num_classes": "2",
                         "num_training_samples": "4", "epochs": "1", "mini_batch_size": "2", **hp},
    )  # fmt: skip


def _operator(config: dict[str, Any], tmp_path: Path, **kwargs: Any) -> Any:
    from sdod_operators import SSDTrainingOperator

    return SSDTrainingOperator(task_id="train", config=config, job_root_base=str(tmp_path),
                               aws_conn_id=None, check_interval=0.2, **kwargs)  # fmt: skip


def test_completed_job_returns_metrics_and_uris(data: Path, tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowException

    result = _operator(_config(data, "op-ok", epochs="2"), tmp_path).execute({})
    assert result["status"] == "Completed" and result["exit_code"] == 0
    assert [m["epoch"] for m in result["metrics"]["validation:mAP"]] == [0, 1]
    assert result["model"] == str(data / "out" / "op-ok" / "output" / "model.tar.gz")
    assert Path(result["model"]).is_file() and "job_root" not in result  # no local paths
    # the name has delivered a model: SageMaker refuses a duplicate, the operator renames
    again = _operator(_config(data, "op-ok"), tmp_path).execute({})
    assert again["job_name"].startswith("op-ok-") and Path(again["model"]).is_file()
    assert again["model"] == str(data / "out" / again["job_name"] / "output" / "model.tar.gz")
    with pytest.raises(AirflowException, match="already delivered"):
        _operator(_config(data, "op-ok"), tmp_path, action_if_job_exists="fail").execute({})


def test_stopped_job_succeeds_with_a_valid_model_or_fails_as_configured(
    data: Path, tmp_path: Path
) -> None:
    from airflow.sdk.exceptions import AirflowException

    from sdod.artifact import read_artifact

    result = _operator(_config(data, "op-stop", runtime=1, epochs="500"), tmp_path).execute({})
    assert result["status"] == "Stopped" and result["exit_code"] == 3
    assert read_artifact(result["model"]).metrics["stopped"] is True
    strict = _operator(
        _config(data, "op-stop2", runtime=1, epochs="500"), tmp_path, stopped_is_success=False
    )
    with pytest.raises(AirflowException, match="Stopped by StoppingCondition"):
        strict.execute({})


def test_failed_job_raises_with_the_message_from_output_failure(data: Path, tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowException

    with pytest.raises(AirflowException, match="class_id 1 is not below num_classes=1"):
        _operator(_config(data, "op-fail", num_classes="1"), tmp_path).execute({})


def test_init_validates_and_does_no_io(data: Path, tmp_path: Path) -> None:
    from sdod.errors import UserError

    bad = _config(data, "op-x")
    bad["TrainingJobName"] = "not_valid!"
    with pytest.raises(UserError, match="TrainingJobName"):
        _operator(bad, tmp_path / "never-created")
    with pytest.raises(ValueError, match="action_if_job_exists"):
        _operator(_config(data, "op-y"), tmp_path, action_if_job_exists="replace")
    assert not (tmp_path / "never-created").exists()


def test_a_valid_operator_is_built_without_touching_disk_network_or_processes(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler builds operators at every parse: any file, folder, socket or process
    made in `__init__` would happen there, on every parse, on the wrong machine."""
    import builtins
    import socket
    import subprocess as sp

    config = _config(data, "op-z")
    _operator(config, tmp_path / "warm-up")  # lazy imports done outside the audit
    done: list[str] = []

    def refuse(what: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            done.append(f"{what}{args[:1]}")
            raise AssertionError(f"{what} in SSDTrainingOperator.__init__: {args[:1]}")

        return call

    for target, name in ((builtins, "open"), (os, "mkdir"), (os, "makedirs"),
                         (socket.socket, "connect"), (sp, "Popen")):  # fmt: skip
        monkeypatch.setattr(target, name, refuse(f"{target.__name__}.{name}"))
    op = _operator(config, tmp_path / "roots")
    monkeypatch.undo()
    assert done == [] and op.config == config
    assert not (tmp_path / "roots").exists() and not (tmp_path / "warm-up").exists()


def test_on_kill_leaves_no_process_behind(data: Path, tmp_path: Path) -> None:
    op = _operator(_config(data, "op-kill", epochs="500"), tmp_path)
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run_catching(op, errors), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while op._process is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert op._process is not None
    pgid = op._process.pid
    time.sleep(2)
    op.on_kill()
    thread.join(timeout=60)
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def _run_catching(op: Any, errors: list[BaseException]) -> None:
    try:
        op.execute({})
    except BaseException as exc:  # the killed job ends Stopped or Failed; either is fine here
        errors.append(exc)

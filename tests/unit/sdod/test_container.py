"""A SageMaker container's /opt/ml read into one job: the spec, the job root, the
rendezvous of several hosts; refused with the fix when it is not there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdod.container import container_job, sagemaker_root
from sdod.errors import UserError
from sdod.jobspec import MAX_RUNTIME


def _opt_ml(root: Path, hosts: list[str]) -> Path:
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"num_classes": 3, "epochs": "1"}))
    (config / "inputdataconfig.json").write_text(json.dumps(
        {"train": {"ContentType": "application/x-recordio", "TrainingInputMode": "File",
                   "RecordWrapperType": "RecordIO"}}
    ))  # fmt: skip
    (config / "resourceconfig.json").write_text(json.dumps({"hosts": hosts}))
    return root


def test_the_job_is_read_from_the_root_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDOD_SAGEMAKER_ROOT", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("TRAINING_JOB_NAME", "byoc")
    monkeypatch.delenv("SDOD_MAX_RUNTIME_SECONDS", raising=False)
    root = _opt_ml(tmp_path / "opt-ml", ["algo-1", "algo-2"])
    job = container_job(root)
    assert job.root == str(root) and job.rdzv_endpoint == "algo-1:29400"
    spec = job.spec
    assert (spec.name, spec.instance_count, spec.container) == ("byoc", 2, True)
    assert spec.hyperparameters == {"num_classes": "3", "epochs": "1"}
    assert spec.max_runtime_seconds == MAX_RUNTIME  # SageMaker enforces its own
    (channel,) = spec.channels
    assert channel.uri == str(root / "input" / "data" / "train")


def test_the_default_root_comes_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _opt_ml(tmp_path, ["algo-1"])
    monkeypatch.setenv("SDOD_SAGEMAKER_ROOT", str(root))
    monkeypatch.setenv("SDOD_MAX_RUNTIME_SECONDS", "60")
    assert sagemaker_root() == root
    job = container_job()
    assert job.rdzv_endpoint is None and job.spec.max_runtime_seconds == 60


def test_no_container_says_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"give --job-root .* or --job-spec"):
        container_job(tmp_path)


def test_sdod_train_resolves_the_container_job_once_and_passes_it_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sdod.container
    import sdod.train.job
    from sdod import stages

    root = _opt_ml(tmp_path, ["algo-1", "algo-2"])
    monkeypatch.setenv("SDOD_SAGEMAKER_ROOT", str(root))
    calls: list[Path | None] = []

    def counted(at: Path | None = None) -> sdod.container.ContainerJob:
        calls.append(at)
        return container_job(at)

    def train_job(job_root: str, **given: object) -> dict[str, object]:
        return {"job_root": job_root, **given}

    monkeypatch.setattr(sdod.container, "container_job", counted)
    monkeypatch.setattr(sdod.train.job, "container_job", counted)  # a torchrun worker's way
    monkeypatch.setattr(sdod.train.job, "train_job", train_job)
    ran = stages.train()  # neither a job root nor a spec: the container's /opt/ml
    assert calls == [None]
    assert ran["job_root"] == str(root) and ran["rdzv_endpoint"] == "algo-1:29400"
    assert ran["spec"] == container_job(root).spec


@pytest.mark.parametrize("mode, ok", [("FastFile", True), ("Pipe", False)])
def test_fastfile_channels_are_files_and_pipe_is_refused(
    tmp_path: Path, mode: str, ok: bool
) -> None:
    """SageMaker presents a FastFile channel as files under /opt/ml/input/data/<channel>;
    a Pipe channel is a FIFO sdod does not read."""
    root = _opt_ml(tmp_path, ["algo-1"])
    config = root / "input" / "config" / "inputdataconfig.json"
    config.write_text(
        json.dumps({"train": {"ContentType": "image/jpeg", "TrainingInputMode": mode}})
    )
    if ok:
        (channel,) = container_job(root).spec.channels
        assert channel.uri == str(root / "input" / "data" / "train")
    else:
        with pytest.raises(UserError, match=r"InputMode Pipe .* use File or FastFile"):
            container_job(root)

"""The SageMaker container contract, in a temporary /opt/ml: `<image> train` and
`<image> serve` as SageMaker runs them, through the image's entrypoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest

from sdod.demo.dataset import make_sample_data

pytestmark = pytest.mark.integration
CHANNELS = ("train", "validation", "train_annotation", "validation_annotation")
HP = {"base_network": "mobilenet-v3", "use_pretrained_model": "0", "num_classes": "3",
      "num_training_samples": "6", "epochs": "1", "mini_batch_size": "3",
      "early_stopping": "False", "freeze_layer_pattern": "false", "_kvstore": "device"}  # fmt: skip


def _opt_ml(root: Path, hp: dict[str, str]) -> dict[str, str]:
    """/opt/ml as SageMaker lays it out for a File-mode image-format job."""
    make_sample_data(root / "data", train=6, validation=3, seed=9)
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hp))
    (config / "inputdataconfig.json").write_text(json.dumps({
        ch: {"ContentType": "image/jpeg", "TrainingInputMode": "File",
             "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for ch in CHANNELS
    }))  # fmt: skip
    (config / "resourceconfig.json").write_text(
        json.dumps(
            {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
        )
    )
    for ch in CHANNELS:
        shutil.move(str(root / "data" / ch), str(root / "input" / "data" / ch))
    return {**os.environ, "SDOD_SAGEMAKER_ROOT": str(root), "TRAINING_JOB_NAME": "byoc-job"}


def _entrypoint(*args: str, env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sdod.entrypoint", *args], env=env,
                          capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]  # fmt: skip


def test_train_then_serve_with_the_sagemaker_layout(tmp_path: Path) -> None:
    root = tmp_path / "opt-ml"
    env = _opt_ml(root, HP)
    run = _entrypoint("train", env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    files = sorted(p.name for p in (root / "model").iterdir())
    assert files == ["hyperparams.json", "metrics.json", "model.safetensors", "model_config.json"]
    assert not (root / "output" / "failure").exists()
    # SageMaker tars /opt/ml/model itself: that archive is a normal sdod model
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        for name in files:
            tar.add(root / "model" / name, arcname=name)
    shown = subprocess.run([sys.executable, "-m", "sdod", "inspect-model", str(tmp_path / "model.tar.gz")],
                           capture_output=True, text=True)  # fmt: skip
    assert shown.returncode == 0 and "mobilenet-v3 SSD300, 3 classes" in shown.stdout

    server = subprocess.Popen([sys.executable, "-m", "sdod.entrypoint", "serve", "--port", "0"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert f"{root / 'model'} on http://0.0.0.0:" in line, line + server.stderr.read()
        port = int(line.split("http://0.0.0.0:")[1].split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=30) as resp:
            assert resp.status == 200
        image = next((root / "input" / "data" / "validation").glob("*.jpg")).read_bytes()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=image,
                                     headers={"Content-Type": "image/jpeg"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert isinstance(json.loads(resp.read())["prediction"], list)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_failed_job_writes_opt_ml_output_failure(tmp_path: Path) -> None:
    root = tmp_path / "opt-ml"
    env = _opt_ml(root, {**HP, "num_classes": "1"})
    run = _entrypoint("train", env=env)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "is not below num_classes=1" in (root / "output" / "failure").read_text()
    assert not (root / "model" / "model.safetensors").exists()


def test_other_commands_are_airflows(tmp_path: Path) -> None:
    run = _entrypoint("version", env={**os.environ, "AIRFLOW_HOME": str(tmp_path)})
    assert run.returncode == 0 and run.stdout.strip().startswith("3."), run.stdout + run.stderr

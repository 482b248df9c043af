"""kill -9 mid-training, rerun the same job: it resumes from the checkpoint."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from sdod import stages
from sdod.artifact import read_artifact
from sdod.demo.dataset import make_sample_data
from sdod.jobspec.form import spec_from_form
from sdod.train import checkpoint


def test_killed_job_resumes_epochs_and_optimizer_state(tmp_path: Path) -> None:
    make_sample_data(tmp_path / "data", train=4, validation=2, seed=6)
    hp = {
        "base_network": "mobilenet-v3",
        "use_pretrained_model": "0",
        "num_classes": "3",
        "num_training_samples": "4",
        "epochs": "6",
        "mini_batch_size": "2",
        "optimizer": "adam",
        "augmentation": "none",
    }
    spec = spec_from_form(
        job_name="resume",
        data_uri=str(tmp_path / "data"),
        output_uri=str(tmp_path / "out"),
        hyperparameters=hp,
        max_runtime_seconds=600,
    )
    spec["CheckpointConfig"] = {"S3Uri": str(tmp_path / "synced-checkpoints")}
    root = tmp_path / "job"
    stages.ingest(job_spec=spec, job_root=str(root))
    ckpt_file = root / "checkpoints" / checkpoint.NAME
    cmd = [sys.executable, "-u", "-m", "sdod", "train", "--job-root", str(root)]

    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if ckpt_file.is_file() and checkpoint.load(ckpt_file).epoch >= 2:
            break
        time.sleep(0.2)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    done_before = checkpoint.load(ckpt_file).epoch
    assert 2 <= done_before < 6
    assert (
        tmp_path / "synced-checkpoints" / checkpoint.NAME
    ).is_file()  # synced to CheckpointConfig.S3Uri
    assert not (root / "model" / "model.tar.gz").exists()

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming from checkpoint {ckpt_file}: {done_before} epoch(s) done" in second.stdout
    epochs_run = [int(e) for e in re.findall(r"epoch=(\d+), validation mAP", second.stdout)]
    assert epochs_run == list(range(done_before, 6))
    metrics = read_artifact(root / "model" / "model.tar.gz").metrics
    assert metrics["epochs_completed"] == 6 and [h["epoch"] for h in metrics["history"]] == list(
        range(6)
    )
    final = checkpoint.load(ckpt_file)
    steps = {float(s["step"]) for s in final.optimizer["state"].values()}
    assert steps == {6 * 2.0}  # Adam's step counter continued across the kill: 6 epochs x 2 batches
    assert sorted(p.name for p in (root / "model").iterdir()) == ["model.tar.gz"]
    assert isinstance(final.torch_rng, torch.Tensor)

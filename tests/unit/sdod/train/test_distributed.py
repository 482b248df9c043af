"""Distributed training: the launch plan, the global-batch split, and real 2-process DDP
runs on CPU (gloo) against single-process training on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdod.artifact import read_artifact
from sdod.demo.dataset import make_sample_data
from sdod.errors import UserError
from sdod.train.distributed import GlobalBatchSampler, World, plan_launch

sys.path.insert(0, str(Path(__file__).parent))
from test_job import _job


def test_rank_slices_together_are_the_single_process_batches() -> None:
    one = list(GlobalBatchSampler(10, 4, World()))
    parts = [list(GlobalBatchSampler(10, 4, World(rank=r, size=2))) for r in range(2)]
    assert len(one) == 2 and all(len(b) == 4 for b in one)
    assert [a + b for a, b in zip(*parts, strict=True)] == one
    s = GlobalBatchSampler(10, 4, World())
    s.set_epoch(1)
    assert list(s) != one  # a new order each epoch, the same on every rank
    with pytest.raises(UserError, match="fewer than the 4 training processes"):
        GlobalBatchSampler(10, 2, World(rank=0, size=4))


def _plan(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    args = {
        "job_name": "j",
        "instance_count": 1,
        "gpus_per_instance": None,
        "kv_store": None,
        "config_dir": tmp_path,
        **kw,
    }
    return plan_launch(**args)  # type: ignore[arg-type]


def test_launch_plans(tmp_path: Path) -> None:
    from sdod.settings import RuntimeSettings

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert _plan(tmp_path).nproc_per_node == max(gpus, 1)
    two = _plan(tmp_path, nproc_per_node=2)
    assert two.distributed and "--standalone" in two.command("root")
    assert two.command("root")[-5:] == ["-m", "sdod", "train", "--job-root", "root"]
    with pytest.raises(UserError, match="dist_async is not supported"):
        _plan(tmp_path, instance_count=2, kv_store="dist_async")
    with pytest.raises(UserError, match="--rdzv-endpoint"):
        _plan(tmp_path, instance_count=2)
    # SDOD_RDZV_ENDPOINT reaches plan_launch as the job's rdzv_endpoint (RuntimeSettings)
    multi = _plan(
        tmp_path, instance_count=3, nproc_per_node=8, kv_store="dist_sync",
        rdzv_endpoint=RuntimeSettings.from_env({"SDOD_RDZV_ENDPOINT": "10.0.0.5"}).rdzv_endpoint,
    )  # fmt: skip
    cmd = multi.command("root")
    assert "--nnodes=3" in cmd and "--rdzv-endpoint=10.0.0.5:29400" in cmd
    assert "--rdzv-backend=c10d" in cmd and "--nproc-per-node=8" in cmd
    (tmp_path / "resourceconfig.json").write_text(
        json.dumps({"current_host": "10.0.0.9", "hosts": ["10.0.0.7", "10.0.0.9"]})
    )
    assert _plan(tmp_path, instance_count=2).rdzv_endpoint == "10.0.0.7:29400"


def _weights(root: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(read_artifact(root / "model" / "model.tar.gz").weights)


def test_two_process_ddp_equals_one_process_on_the_same_global_batch(tmp_path: Path) -> None:
    """vgg-16 (SageMaker's vgg16_reduced: no BatchNorm; on CPU, BN statistics stay per
    process). Tolerance: weights within 1e-5, validation mAP within 1e-6 per epoch."""
    from sdod.model.sagemaker_layout import build_layout, initialise

    make_sample_data(tmp_path / "data", train=4, validation=2, num_classes=2, seed=1)
    hp = {
        "base_network": "vgg-16",
        "epochs": "2",
        "mini_batch_size": "4",
        "augmentation": "none",
        "optimizer": "sgd",
        "learning_rate": "0.01",
    }
    runs = {}
    for name, procs in (("one", "1"), ("two", "2")):
        root = _job(tmp_path, tmp_path / "data", name, **hp)
        cmd = [sys.executable, "-m", "sdod", "train", "--job-root", str(root)]
        run = subprocess.run(
            [*cmd, "--nproc-per-node", procs],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "SDOD_SEED": "0"},  # the same initial weights in both runs
        )
        assert run.returncode == 0, run.stdout + run.stderr
        runs[name] = root
        if procs == "2":
            assert "× 2 processes" in run.stdout and run.stdout.count("validation mAP") == 2
    one, two = (read_artifact(runs[n] / "model" / "model.tar.gz").metrics for n in ("one", "two"))
    assert two["processes"] == 2 and "processes" not in one
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a["validation:mAP"] == pytest.approx(b["validation:mAP"], abs=1e-6)
    w1, w2 = _weights(runs["one"]), _weights(runs["two"])
    torch.manual_seed(0)
    init_model = build_layout("vgg-16", 2, 300)  # as the job draws it
    initialise(init_model)
    init = init_model.state_dict()
    moved = max((w1[k] - init[k]).abs().max().item() for k in w1)
    apart = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    assert moved > 1e-3 and apart < 1e-5, (moved, apart)
    assert not (runs["two"] / "output" / "failure").exists()
    # the first process indexed each channel once; the second loaded that index
    index = json.loads((runs["two"] / "index" / "train.json").read_text())
    assert len(index["samples"]) == 4 and not (runs["one"] / "index").exists()


def test_sigterm_to_the_launcher_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    import signal

    make_sample_data(tmp_path / "data", train=4, validation=2, num_classes=2, seed=1)
    root = _job(tmp_path, tmp_path / "data", "ddp-term", epochs="500", mini_batch_size="4")
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "sdod", "train", "--job-root", str(root), "--nproc-per-node", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # training steps are running on both ranks
        seen.append(line)
        if "validation mAP" in line:
            break
    proc.send_signal(signal.SIGTERM)  # to the launcher only: it passes the stop on
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 3, "".join(seen) + out
    metrics = read_artifact(root / "model" / "model.tar.gz").metrics
    assert metrics["stopped"] is True and metrics["processes"] == 2
    assert json.loads((root / "output" / ".outcome.json").read_text())["status"] == "Stopped"


def test_two_machines_meet_through_a_c10d_rendezvous(tmp_path: Path) -> None:
    """InstanceCount=2 run as two `sdod train` processes with their own job roots on this
    host, meeting at 127.0.0.1: one model, written by rank 0's machine."""
    import socket
    import time

    from sdod import stages

    make_sample_data(tmp_path / "data", train=4, validation=2, num_classes=2, seed=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for machine in ("m1", "m2"):
        root = _job(tmp_path, tmp_path / "data", machine, mini_batch_size="2", kv_store="dist_sync")
        spec = json.loads((root / "input" / "config" / "trainingjob.json").read_text())
        spec["TrainingJobName"] = "two-machines"  # the same job on both
        spec["ResourceConfig"] = {
            "InstanceCount": 2,
            "InstanceType": "ml.p3.2xlarge",
            "VolumeSizeInGB": 50,
        }
        stages.ingest(job_spec=spec, job_root=str(root))
        cmd = [sys.executable, "-m", "sdod", "train", "--job-root", str(root)]
        env = {**os.environ, "SDOD_TRAINING_SLOTS": "2"}  # two "machines" on one host
        procs.append(
            subprocess.Popen(
                [*cmd, "--rdzv-endpoint", f"127.0.0.1:{port}"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        time.sleep(0.5)
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outs)
    assert "× 2 machine(s)" in outs[0] and "× 2 machine(s)" in outs[1]
    written = [r for r in ("m1", "m2") if (tmp_path / r / "model" / "model.tar.gz").exists()]
    assert len(written) == 1
    assert read_artifact(tmp_path / written[0] / "model" / "model.tar.gz").metrics["processes"] == 2


def test_data_workers_share_the_cpus_among_the_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from sdod.train.job import data_workers

    monkeypatch.delenv("SDOD_DATA_WORKERS", raising=False)
    cpus = len(os.sched_getaffinity(0))
    assert data_workers(World()) == max(1, min(8, cpus))
    assert data_workers(World(rank=0, size=64, local_size=64)) == 1
    from sdod.settings import RuntimeSettings

    monkeypatch.setenv("SDOD_DATA_WORKERS", "0")
    assert data_workers(World(), RuntimeSettings.from_env().data_workers) == 0
    monkeypatch.setenv("SDOD_DATA_WORKERS", "many")
    with pytest.raises(UserError, match="SDOD_DATA_WORKERS must be a whole number >= 0"):
        RuntimeSettings.from_env()

"""Training jobs through the CLI, in real processes: Completed, Stopped, Failed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sdod import stages
from sdod.artifact import read_artifact
from sdod.demo.dataset import make_sample_data

# SageMaker's MetricDefinitions regexes for the built-in Object Detection algorithm
REGEXES = {
    "validation:mAP": r"#quality_metric: host=\S+, epoch=\S+, validation mAP <score>=\((\S+)\)",
    "train:cross_entropy": r"#quality_metric: host=\S+, epoch=\S+, batch=\S+ train cross_entropy <loss>=\((\S+)\)",
    "train:smooth_l1": r"#quality_metric: host=\S+, epoch=\S+, batch=\S+ train smooth_l1 <loss>=\((\S+)\)",
    "train:throughput": r"#throughput_metric: host=\S+, train throughput=(\S+) records/second",
    "progress": r"#progress_metric: host=\S+, completed (\S+) %",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bucket")
    make_sample_data(root, train=4, validation=2, num_classes=2, seed=1)
    return root


def _job(
    tmp_path: Path,
    data: Path,
    name: str,
    *,
    runtime: int = 3600,
    model: Path | None = None,
    **hp: str,
) -> Path:
    spec = {
        "TrainingJobName": name,
        "HyperParameters": {
            "base_network": "mobilenet-v3",
            "num_classes": "2",
            "num_training_samples": "4",
            "use_pretrained_model": "0",
            "epochs": "1",
            "mini_batch_size": "2",
            "optimizer": "adam",
            **hp,
        },
        "InputDataConfig": [
            {
                "ChannelName": ch,
                "ContentType": "image/jpeg",
                "DataSource": {"S3DataSource": {"S3Uri": str(data / ch)}},
            }
            for ch in ("train", "validation", "train_annotation", "validation_annotation")
        ]
        + (
            [
                {
                    "ChannelName": "model",
                    "ContentType": "application/x-sagemaker-model",
                    "DataSource": {"S3DataSource": {"S3Uri": str(model)}},
                }
            ]
            if model
            else []
        ),
        "OutputDataConfig": {"S3OutputPath": str(tmp_path / "out")},
        "StoppingCondition": {"MaxRuntimeInSeconds": runtime},
    }
    root = tmp_path / name
    stages.ingest(job_spec=spec, job_root=str(root))
    return root


def _train(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdod", "train", "--job-root", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_completed_job_logs_sagemaker_metric_lines_and_writes_the_artifact(
    tmp_path: Path, data: Path
) -> None:
    root = _job(tmp_path, data, "ok-job", epochs="2")
    run = _train(root)
    assert run.returncode == 0, run.stdout + run.stderr
    for name, regex in REGEXES.items():
        assert re.search(regex, run.stdout), f"no {name} line"
    maps = re.findall(REGEXES["validation:mAP"], run.stdout)
    assert len(maps) == 2 and all(0.0 <= float(m) <= 1.0 for m in maps)
    artifact = read_artifact(root / "model" / "model.tar.gz")
    assert artifact.config["class_names"] == ["circle", "rectangle"]
    assert artifact.metrics["stopped"] is False and artifact.metrics["epochs_completed"] == 2
    assert artifact.hyperparams["base_network"] == "mobilenet-v3"
    assert not (root / "output" / "failure").exists()


def test_max_runtime_stops_the_job_with_a_loadable_artifact(tmp_path: Path, data: Path) -> None:
    root = _job(tmp_path, data, "stop-job", runtime=1, epochs="500")
    run = _train(root)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "Stopped (MaxRuntimeInSeconds reached)" in run.stdout
    artifact = read_artifact(root / "model" / "model.tar.gz")
    assert artifact.metrics["stopped"] is True and artifact.metrics["epochs_completed"] < 500
    from safetensors.torch import load

    from sdod.model.ssd import SSD, SSDConfig

    SSD(SSDConfig("mobilenet-v3", 2, 300)).load_state_dict(load(artifact.weights))


def test_bad_labels_fail_the_job_with_the_reason_in_output_failure(
    tmp_path: Path, data: Path
) -> None:
    root = _job(tmp_path, data, "bad-job", num_classes="1")
    run = _train(root)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    failure = (root / "output" / "failure").read_text()
    assert "class_id 1 is not below num_classes=1" in failure
    assert "class_id 1 is not below num_classes=1" in run.stderr


def test_missing_pretrained_weights_say_where_to_put_them(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("SDOD_PRETRAINED_DIR", raising=False)
    root = _job(tmp_path, data, "pre-job", use_pretrained_model="1")
    outcome = stages.train(job_root=str(root), log=lambda _: None)
    assert outcome.status == "Failed" and outcome.exit_code == 2
    assert (
        "mobilenet_v3_small-047dcff4.pth" in outcome.message
        and "use_pretrained_model=0" in outcome.message
    )
    assert json.loads(json.dumps(outcome.to_dict()))["status"] == "Failed"


def test_sigterm_mid_training_stops_with_a_loadable_artifact(tmp_path: Path, data: Path) -> None:
    import signal
    import time

    root = _job(tmp_path, data, "term-job", epochs="500")
    proc = subprocess.Popen([sys.executable, "-u", "-m", "sdod", "train", "--job-root", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # wait until training steps are running, then signal
        lines.append(line)
        if "train cross_entropy" in line:
            break
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, "".join(lines) + out
    assert "Stopped (received SIGTERM)" in out
    metrics = read_artifact(root / "model" / "model.tar.gz").metrics
    assert metrics["stopped"] is True and metrics["stop_reason"] == "received SIGTERM"


def test_sigterm_while_the_job_is_still_starting_stops_it_cleanly(
    tmp_path: Path, data: Path
) -> None:
    import signal
    import time

    root = _job(tmp_path, data, "early-term-job", epochs="500")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdod", "train", "--job-root", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)  # the handler is in place; torch is still being imported
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out
    metrics = read_artifact(root / "model" / "model.tar.gz").metrics
    assert metrics["stopped"] is True and metrics["epochs_completed"] == 0


def test_incremental_training_starts_from_the_model_channel_and_refuses_a_mismatch(
    tmp_path: Path, data: Path
) -> None:
    from safetensors.torch import load

    first = _job(tmp_path, data, "first")
    assert _train(first).returncode == 0
    earlier = first / "model" / "model.tar.gz"
    # a learning rate of 1e-10 leaves the weights where they started: the earlier model's
    then = _job(tmp_path, data, "then", model=earlier, learning_rate="1e-10")
    run = _train(then)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "incremental training: starting from the weights in" in run.stdout
    before = load(read_artifact(earlier).weights)
    after = load(read_artifact(then / "model" / "model.tar.gz").weights)
    convs = [k for k in before if k.endswith(".weight") and before[k].ndim == 4]
    assert len(convs) > 20
    for key in convs:
        assert (after[key] - before[key]).abs().max() < 1e-6, key

    for name, hp in (
        ("classes", {"num_classes": "3"}),
        ("network", {"base_network": "resnet-50"}),
    ):
        root = _job(tmp_path, data, f"mismatch-{name}", model=earlier, **hp)
        run = _train(root)
        assert run.returncode == 2 and "Traceback" not in run.stderr
        failure = (root / "output" / "failure").read_text()
        key, ours = next(iter(hp.items()))
        theirs = "2" if key == "num_classes" else "mobilenet-v3"
        assert f"{key}={theirs}" in failure and f"{key}={ours}" in failure, failure


@pytest.mark.parametrize("point", ["data", "forward", "validation", "checkpoint"])
def test_sigterm_to_the_process_group_at_each_point_stops_with_a_loadable_artifact(
    tmp_path: Path, data: Path, point: str
) -> None:
    """SIGTERM to the whole process group (as the operator and Ctrl-C send it) while the job
    is paused at a known point: loader workers ignore it, the job stops at the next step
    boundary and leaves a model that loads and predicts; exit 3."""
    import os
    import signal
    import time

    from sdod.serve.predictor import Predictor
    from sdod.train import checkpoint

    root = _job(tmp_path, data, f"term-{point}", epochs="500")
    marker = tmp_path / f"{point}.paused"
    env = {**os.environ, "SDOD_PAUSE_AT": f"{point}:{marker}", "SDOD_PAUSE_SECONDS": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdod", "train", "--job-root", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"never reached {point}"
    os.killpg(proc.pid, signal.SIGTERM)
    if point == "checkpoint":  # a second SIGTERM during the save changes nothing
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out
    assert "Stopped (received SIGTERM)" in out and "Traceback" not in out
    metrics = read_artifact(root / "model" / "model.tar.gz").metrics
    assert metrics["stopped"] is True
    image = next((data / "validation").glob("*.jpg")).read_bytes()
    prediction = Predictor.load(root / "model" / "model.tar.gz").predict(image)["prediction"]
    assert isinstance(prediction, list)
    if point == "checkpoint":  # the checkpoint being written when the signals came is whole
        assert checkpoint.load(root / "checkpoints" / checkpoint.NAME).epoch >= 1
        assert [p.name for p in (root / "checkpoints").iterdir()] == [checkpoint.NAME]


def _hold_the_slot() -> int:
    """Take this machine's only training slot, as a running job would."""
    import os

    from sdod.settings import RuntimeSettings
    from sdod.train.slots import _try_lock

    folder = RuntimeSettings.from_env().slot_dir
    folder.mkdir(parents=True, exist_ok=True)
    fd = _try_lock(folder / "slot-0.lock")
    assert fd is not None
    os.write(fd, b"pid 1, job holder\n")
    return fd


def test_max_wait_time_bounds_the_wait_for_a_training_slot(tmp_path: Path, data: Path) -> None:
    import os

    root = _job(tmp_path, data, "waits")
    spec_file = root / "input" / "config" / "trainingjob.json"
    spec = json.loads(spec_file.read_text())
    spec["StoppingCondition"] = {"MaxRuntimeInSeconds": 2, "MaxWaitTimeInSeconds": 3}
    stages.ingest(job_spec=spec, job_root=str(root))
    fd = _hold_the_slot()
    try:
        run = _train(root)
    finally:
        os.close(fd)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "waiting for a free training slot" in run.stdout
    failure = (root / "output" / "failure").read_text()
    assert "MaxWaitTimeInSeconds=3 passed" in failure and "job holder" in failure
    assert not (root / "model" / "model.tar.gz").exists()


def test_a_job_waits_for_the_slot_and_then_runs(tmp_path: Path, data: Path) -> None:
    import os
    import threading
    import time

    root = _job(tmp_path, data, "queued")
    fd = _hold_the_slot()
    threading.Timer(12.0, os.close, args=(fd,)).start()  # ends after 12 s: after our start-up
    started = time.monotonic()
    run = _train(root)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "waiting for a free training slot" in run.stdout
    assert "got a training slot after" in run.stdout and time.monotonic() - started > 12


def test_early_stopping_ends_the_job_completed_with_the_best_model(
    tmp_path: Path, data: Path
) -> None:
    root = _job(tmp_path, data, "early-job", epochs="12", learning_rate="0.0000000001",
                early_stopping="True", early_stopping_min_epochs="2",
                early_stopping_patience="2")  # fmt: skip
    run = _train(root)
    assert run.returncode == 0, run.stdout + run.stderr  # Completed, not Stopped
    metrics = read_artifact(root / "model" / "model.tar.gz").metrics
    assert metrics["early_stopped"] is True and metrics["stopped"] is False
    done = metrics["epochs_completed"]
    assert 2 <= done < 12 and metrics["early_stopping_epoch"] == done - 1
    assert f"early stopping after epoch {done - 1}" in run.stdout
    maps = re.findall(REGEXES["validation:mAP"], run.stdout)
    assert len(maps) == done
    assert json.loads((root / "output" / "metrics.json").read_text())["early_stopped"] is True

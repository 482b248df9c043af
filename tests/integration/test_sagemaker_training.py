"""Incremental training from SageMaker's own model.tar.gz: `sdod train --job-spec` with the
`model` channel on the archive as SageMaker wrote it. The trained model keeps the graph, its
anchors (MXNet's `MultiBoxPrior` output, anchors.npy) and its classes, as SageMaker's own
incremental training does, and `predict` takes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sdod.model.networks import build_network
from tests.integration.test_sagemaker_models import MX, RESNET, mxnet_dataset

pytestmark = pytest.mark.integration


def _sdod(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdod", *argv], capture_output=True, text=True, env=env, timeout=900
    )


def _spec(data: Path, model: Path, out: Path) -> dict[str, object]:
    channels = {"train": "images", "train_annotation": "annotations"}
    channels |= {"validation": "images", "validation_annotation": "annotations"}
    inputs: list[dict[str, object]] = [
        {"ChannelName": name, "DataSource": {"S3DataSource": {"S3Uri": str(data / folder)}}}
        for name, folder in channels.items()
    ]
    inputs.append(
        {
            "ChannelName": "model",
            "ContentType": "application/x-sagemaker-model",
            "DataSource": {"S3DataSource": {"S3Uri": str(model)}},
        }
    )
    hyperparameters = {  # a tiny job: one epoch, one step of two photos
        "base_network": "resnet-50",
        "num_classes": "2",
        "image_shape": "300",
        "num_training_samples": "2",
        "epochs": "1",
        "mini_batch_size": "2",
        "learning_rate": "0.0001",
        "use_pretrained_model": "0",
        "freeze_layer_pattern": "^(stage1_|stage2_).*",
        "nms_threshold": "0.3",  # this job's, as SageMaker's training graph takes it
    }
    return {
        "TrainingJobName": "from-sagemaker",
        "HyperParameters": hyperparameters,
        "InputDataConfig": inputs,
        "OutputDataConfig": {"S3OutputPath": str(out)},
        "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
    }


@pytest.mark.slow  # 60-90 s on 2 loaded cores, half of it gzip writing the 110 MB model.tar.gz
def test_one_epoch_from_the_sagemaker_archive_keeps_its_anchors_and_classes(
    tmp_path: Path,
) -> None:
    from safetensors.torch import load

    from sdod.artifact import read_artifact
    from sdod.model.sagemaker import load_model, read_archive

    env = {**os.environ, "SDOD_CACHE_DIR": str(tmp_path / "cache"), "SDOD_SEED": "0"}
    photos = ["05_motorcycle_right_small.jpg", "17_coins_gray.jpg"]
    mxnet_dataset(tmp_path / "data", RESNET, photos, floor=0.3)
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(_spec(tmp_path / "data", RESNET / "model.tar.gz", tmp_path / "out")))
    run = _sdod("train", "--job-spec", str(spec), "--job-root", str(tmp_path / "job"), env=env)
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-3000:]
    assert "incremental training: starting from the weights in" in run.stdout
    assert "frozen layers: stage1_unit1_bn1" in run.stdout

    trained_path = tmp_path / "out" / "from-sagemaker" / "output" / "model.tar.gz"
    trained = read_artifact(trained_path)
    config = trained.model_config
    assert config.variant == "sagemaker" and config.base_network == "resnet-50"
    assert config.num_classes == 2 and len(config.names()) == 2
    assert config.anchor_count == 2268 and trained.metrics["epochs_completed"] == 1
    model = build_network(config)
    model.load_state_dict(load(trained.weights))
    want = np.load(RESNET / "anchors.npy")[0]
    assert np.abs(model.corners.numpy() - want).max() <= 1e-6  # the graph's own anchors
    assert model.detection.nms_threshold == config.nms_threshold == 0.3
    assert config.network is not None and config.network["detection"]["nms_threshold"] == 0.3
    assert model.detection.nms_topk == 400 and not model.detection.force_suppress  # the graph's

    original = load_model(read_archive(RESNET / "model.tar.gz")).state_dict()
    after = load(trained.weights)
    assert set(after) == set(original)
    frozen = [k for k in after if ".stage1_" in k and k.endswith((".weight", ".bias"))]
    assert "net.layers.stage1_unit1_conv1.weight" in frozen
    for key in frozen:  # frozen layers carried through; the rest trained from SageMaker's
        assert (after[key] - original[key]).abs().max() == 0, key
    moved = [k for k in after if "cls_pred" in k and (after[k] - original[k]).abs().max() > 0]
    assert moved, "the class predictors did not train"

    run = _sdod("predict", "--model", str(trained_path), str(MX / "images" / photos[0]), env=env)
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)["prediction"]
    assert rows and {row[0] for row in rows} <= {0.0, 1.0}
    assert all(0.0 <= v <= 1.0 for row in rows for v in row[1:])

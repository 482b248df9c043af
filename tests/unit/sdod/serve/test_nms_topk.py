"""`nms_topk` (SageMaker jobs send 400) is the detection cap of a model: accepted as a
hyperparameter, kept in model_config.json, and followed by `predict`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sdod.hyperparameters import parse_hyperparameters
from sdod.model.networks import build_network


def _model(path: Path, nms_topk: int | None) -> Path:
    import torch
    from safetensors.torch import save

    from sdod.artifact import Artifact, ModelConfig, write_artifact

    torch.manual_seed(0)
    config = ModelConfig("resnet-lite", 2, 300, ("a", "b"))
    state = {k: v.contiguous() for k, v in build_network(config).state_dict().items()}
    raw = config.to_dict()
    if nms_topk is None:
        raw.pop("nms_topk")  # a model written before the key existed
    else:
        raw["nms_topk"] = nms_topk
    return write_artifact(path, Artifact(save(state), {}, raw, {"validation:mAP": 0.1}))


def _image(path: Path) -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((300, 300), 80).convert("RGB").save(buf, "JPEG")
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize(("nms_topk", "rows"), [(None, 400), (250, 250), (7, 7)])
def test_predict_keeps_at_most_nms_topk_detections(
    nms_topk: int | None, rows: int, tmp_path: Path
) -> None:
    model = _model(tmp_path / "m.tar.gz", nms_topk)
    image = _image(tmp_path / "noise.jpg")
    run = subprocess.run(
        [sys.executable, "-m", "sdod", "predict", "--model", str(model), str(image)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    # an untrained model finds "objects" everywhere: the cap is what bounds the answer
    assert len(json.loads(run.stdout)["prediction"]) == rows


def test_nms_topk_and_the_kvstore_sagemaker_logs_are_accepted() -> None:
    hp = parse_hyperparameters(
        {"num_classes": "2", "num_training_samples": "4", "nms_topk": "400",
         "kv_store": "device", "early_stopping_tolerance": "1"}
    )  # fmt: skip
    assert hp.nms_topk == 400 and hp.kv_store == "device" and hp.early_stopping_tolerance == 1.0
    assert parse_hyperparameters({"num_classes": "2", "num_training_samples": "4"}).nms_topk == 400

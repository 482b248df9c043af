"""Inference: torch and onnxruntime agree; the HTTP endpoint in a real server process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sdod import stages
from sdod.config import spec_from_form
from sdod.data.sampledata import make_sample_data

pytestmark = pytest.mark.integration
MX = Path(__file__).resolve().parents[1] / "fixtures" / "mxnet"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    make_sample_data(root / "data", train=4, validation=1, seed=11)
    for channel in ("validation", "validation_annotation"):  # validate on the memorised images, so
        shutil.rmtree(
            root / "data" / channel
        )  # the best-by-validation weights are the memorised ones
        shutil.copytree(
            root / "data" / channel.replace("validation", "train"), root / "data" / channel
        )
    hp = {  # memorise 4 images: confident, well-separated detections to compare backends on
        "base_network": "mobilenet-v3",
        "use_pretrained_model": "0",
        "num_classes": "3",
        "num_training_samples": "4",
        "epochs": "150",
        "mini_batch_size": "4",
        "optimizer": "adam",
        "learning_rate": "0.002",
        "augmentation": "none",
    }
    spec = spec_from_form(
        job_name="serve",
        data_uri=str(root / "data"),
        output_uri=str(root / "out"),
        hyperparameters=hp,
        max_runtime_seconds=600,
    )
    outcome = stages.train(job_spec=spec, job_root=str(root / "job"), log=lambda _: None)
    assert outcome.status == "Completed", outcome.message
    result = subprocess.run(
        [sys.executable, "-m", "sdod", "export-onnx", "--model", str(outcome.artifact)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return Path(str(outcome.artifact))


def test_torch_and_onnxruntime_predictions_agree(model: Path) -> None:
    import torch

    from sdod.data.dataset import decode_rgb
    from sdod.serve.predictor import Predictor

    torch_p = Predictor.load(model)
    onnx_p = Predictor.load(model, backend="onnxruntime")
    data_dir = model.parents[2] / "data"
    images = sorted((data_dir / "train").glob("*.jpg")) + sorted((MX / "images").glob("*.jpg"))[:6]
    compared = 0
    for image in images:
        data = image.read_bytes()
        batch = torch_p.transform(decode_rgb(data, image.name)).unsqueeze(0)
        with torch.no_grad():
            raw_torch = torch_p.run(batch)
        raw_onnx = onnx_p.run(batch)
        for t, o in zip(raw_torch, raw_onnx, strict=True):  # the exported graph computes the same,
            assert torch.allclose(t, o, rtol=1e-5, atol=1e-4), image.name  # to float32 kernel noise
        if image.parent.name != "train":
            continue  # predictions are compared where the model is confident
        a = torch_p.predict(data, score_threshold=0.5)["prediction"]
        b = onnx_p.predict(data, score_threshold=0.5)["prediction"]
        assert len(a) == len(b), image.name
        for row_a, row_b in zip(a, b, strict=True):
            assert max(abs(x - y) for x, y in zip(row_a, row_b, strict=True)) < 1e-4, image.name
            compared += 1
    assert compared >= 4  # at least one object per memorised image


def _request(url: str, data: bytes | None = None, ctype: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_invocations_round_trip_against_a_real_server(model: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdod",
            "serve",
            "--model",
            str(model),
            "--port",
            "0",
            "--max-request-bytes",
            "200000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base = line.split(" on ")[1].split()[0]
        assert _request(f"{base}/ping") == (200, None)
        jpeg = (MX / "images" / "01_chelsea.jpg").read_bytes()
        for ctype in ("image/jpeg", "application/x-image"):
            status, body = _request(f"{base}/invocations", jpeg, ctype)
            assert status == 200 and isinstance(body["prediction"], list)
            for row in body["prediction"]:
                assert len(row) == 6 and all(isinstance(v, float) for v in row)
                assert 0 <= row[0] < 3 and all(0.0 <= v <= 1.0 for v in row[1:])
        status, body = _request(f"{base}/invocations?top_k=2", jpeg, "image/jpeg")
        assert status == 200 and len(body["prediction"]) <= 2
        png = MX / "images" / "16_camera_gray.jpg"
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.open(png).save(buf, format="PNG")
        assert _request(f"{base}/invocations", buf.getvalue(), "image/png")[0] == 200
        status, body = _request(f"{base}/invocations", b"hello", "text/plain")
        assert status == 415 and "Content-Type text/plain" in body["error"]
        status, body = _request(f"{base}/invocations", b"not an image at all", "image/jpeg")
        assert status == 400 and "does not decode" in body["error"]
        status, body = _request(f"{base}/invocations", b"x" * 300000, "image/jpeg")
        assert status == 413 and "over the limit" in body["error"]
        assert _request(f"{base}/nope")[0] == 404
    finally:
        proc.terminate()
        proc.wait(timeout=30)

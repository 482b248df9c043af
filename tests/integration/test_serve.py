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

import numpy as np
import pytest

from tests.integration.conftest import train_memoriser

pytestmark = pytest.mark.integration
MX = Path(__file__).resolve().parents[1] / "fixtures" / "mxnet"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    # memorise 4 images: confident, well-separated detections to compare backends on
    outcome = train_memoriser(root, num_classes=3, epochs=150, seed=0)
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
        assert status == 415 and "JPEG or PNG" in body["error"]
        status, body = _request(f"{base}/invocations", jpeg[:300], "image/jpeg")
        assert status == 400 and "does not decode" in body["error"]
        status, body = _request(f"{base}/invocations", b"x" * 300000, "image/jpeg")
        assert status == 413 and "over the limit" in body["error"]
        assert _request(f"{base}/nope")[0] == 404
        assert _request(f"{base}/endpoints/bad_name!/invocations", jpeg, "image/jpeg")[0] == 404

        # boto3's sagemaker-runtime client, unchanged: POST /endpoints/<name>/invocations,
        # signed (the signature is ignored), custom attributes in their header
        import boto3

        runtime = boto3.client("sagemaker-runtime", endpoint_url=base, region_name="us-east-1",
                               aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
        response = runtime.invoke_endpoint(
            EndpointName="my-detector", ContentType="image/jpeg", Accept="application/json",
            Body=jpeg, CustomAttributes="top_k=1",
        )  # fmt: skip
        assert response["ContentType"] == "application/json"
        decoded = json.loads(response["Body"].read())
        assert len(decoded["prediction"]) == 1 and len(decoded["prediction"][0]) == 6
        assert decoded["prediction"][0] == _request(f"{base}/invocations?top_k=1", jpeg,
                                                    "image/jpeg")[1]["prediction"][0]  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _data(model: Path) -> Path:
    return model.parents[2] / "data"  # the fixture's job root sits next to its data


def test_evaluate_writes_coco_metrics_a_table_curves_and_examples(
    model: Path, tmp_path: Path
) -> None:
    from PIL import Image

    data, out = _data(model), tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable, "-m", "sdod", "evaluate", "--model", str(model),
            "--images", str(data / "train"), "--annotations", str(data / "train_annotation"),
            "--metric", "coco", "--out", str(out), "--examples", "2", "--json",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    r = json.loads(result.stdout)
    metrics = json.loads((out / "metrics.json").read_text())
    assert r["metric"] == metrics["metric"] == "coco" and metrics["images"] == 4
    coco = metrics["coco"]
    assert set(coco) >= {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"}
    # memorised: every object found at IoU 0.5 (seeds 0-2: 1.0); the 0.5:0.95 average is
    # lower (the boxes are not pixel-tight after 150 steps: 0.49-0.73), and it is the mAP
    assert coco["AP50"] > 0.9 and 0.2 < coco["AP"] < coco["AP50"] and coco["AP75"] <= coco["AP50"]
    assert metrics["mAP"] == coco["AP"]
    rows = (out / "per_class_ap.csv").read_text().splitlines()
    assert rows[0] == "class_id,class_name,ap,ground_truth,detections" and len(rows) == 4
    curves = sorted((out / "pr_curves").glob("*.png"))
    assert len(curves) == 3 and Image.open(curves[0]).size == (480, 400)
    examples = sorted((out / "examples").glob("*.png"))
    assert len(examples) == 2
    with Image.open(examples[0]) as im:  # the image at its own size, boxes drawn in colour
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert ((pixels == [0, 170, 0]).all(axis=1)).sum() > 50  # true boxes (green)
    assert ((pixels == [220, 30, 30]).all(axis=1)).sum() > 50  # detections (red)


def _batch(model: Path, src: str, dest: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "sdod", "batch-predict", "--model", str(model),
        "--input", src, "--output", dest, "--json", *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_batch_predict_over_a_folder_writes_one_response_per_image(
    model: Path, tmp_path: Path
) -> None:
    from sdod.serve.predictor import Predictor

    src = tmp_path / "in"
    shutil.copytree(_data(model) / "train", src / "nested")
    (src / "notes.txt").write_text("not an image: ignored")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = _batch(model, str(src), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["images"] == 5 and summary["written"] == 4
    assert [f["file"].rsplit("/", 1)[1] for f in summary["failed"]] == ["broken.jpg"]
    assert "does not decode" in summary["failed"][0]["error"]
    assert "5/5 images (1 failed)" in result.stderr  # progress
    predictor = Predictor.load(model)
    for image in sorted((src / "nested").glob("*.jpg")):
        written = json.loads((tmp_path / "out" / "nested" / f"{image.name}.out").read_text())
        alone = predictor.predict(image.read_bytes())["prediction"]
        confident = [row for row in written["prediction"] if row[1] > 0.5]
        # in batches of up to 8, as the image alone to float32 noise
        assert confident and len(confident) == len([r for r in alone if r[1] > 0.5])
        for row, single in zip(confident, alone, strict=False):
            assert row == pytest.approx(single, abs=1e-4)
    assert json.loads((tmp_path / "out" / "_failures.json").read_text()) == summary["failed"]
    stopped = _batch(model, str(src), str(tmp_path / "out2"), "--on-error", "fail")
    assert stopped.returncode == 2 and "broken.jpg" in stopped.stderr
    assert "Traceback" not in stopped.stderr


def test_batch_predict_from_and_to_s3(model: Path, s3_endpoint: Any, tmp_path: Path) -> None:
    import boto3

    src = s3_endpoint.upload_dir(_data(model) / "validation", "batch/in")
    result = _batch(model, src, f"s3://{s3_endpoint.bucket}/batch/out/")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["written"] == 4
    client = boto3.client("s3", endpoint_url=s3_endpoint.url)
    keys = sorted(
        o["Key"]
        for o in client.list_objects_v2(Bucket=s3_endpoint.bucket, Prefix="batch/out/")["Contents"]
    )
    assert len(keys) == 4 and all(k.endswith(".jpg.out") for k in keys)
    body = client.get_object(Bucket=s3_endpoint.bucket, Key=keys[0])["Body"].read()
    assert set(json.loads(body)) == {"prediction"}

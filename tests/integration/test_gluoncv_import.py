"""GluonCV weights in: `sdod import-gluoncv` writes a model.tar.gz that computes GluonCV's
function, and that predict, export-onnx (onnxruntime agreeing with torch), evaluate and the
model channel of incremental training take."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdod import stages, tools
from sdod.artifact import read_artifact
from sdod.demo.dataset import make_sample_data
from sdod.serve.predictor import Predictor
from tests.gluoncv_formula import NETS, formula_params, params_bytes

pytestmark = pytest.mark.integration
IMAGES = Path(__file__).resolve().parents[1] / "fixtures" / "mxnet" / "images"
VGG = "ssd_300_vgg16_atrous_voc"


def _sdod(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdod", *args], capture_output=True, text=True, timeout=600
    )


def _raw(predictor: Predictor, network: str) -> tuple[np.ndarray, np.ndarray]:
    batch = torch.from_numpy(np.load(NETS / f"{network}.npz")["input"])
    with torch.no_grad():
        cls, box = predictor.run(batch)[:2]
    return np.asarray(cls), np.asarray(box)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gluoncv")
    (root / "vgg.params").write_bytes(params_bytes(formula_params(VGG)))
    out = root / "model.tar.gz"
    run = _sdod(
        "import-gluoncv", "--params", str(root / "vgg.params"), "--network", VGG,
        "--classes", "person,animal,object,other", "--out", str(out), "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["num_classes"] == 4 and result["base_network"] == "vgg-16"
    assert result["classes"] == ["person", "animal", "object", "other"]
    return out


def test_the_archive_computes_gluoncvs_outputs(imported: Path) -> None:
    ref = np.load(NETS / f"{VGG}.npz")
    cls, box = _raw(Predictor.load(imported), VGG)
    np.testing.assert_allclose(cls, ref["eval_cls_preds"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(box, ref["eval_box_preds"], rtol=0, atol=1e-3)
    config = read_artifact(imported).model_config
    assert config.variant == "gluoncv" and config.names() == ["person", "animal", "object", "other"]


def test_predict_and_onnx_export_round_trip(imported: Path, tmp_path: Path) -> None:
    image = sorted(IMAGES.glob("*.jpg"))[0]
    run = _sdod("predict", "--model", str(imported), str(image), "--json")
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    rows = rows[0] if isinstance(rows, list) else rows
    assert all(len(r) == 6 and 0 <= r[1] <= 1 for r in rows["prediction"])
    with_onnx = tmp_path / "onnx.tar.gz"
    run = _sdod("export-onnx", "--model", str(imported), "--out", str(with_onnx))
    assert run.returncode == 0, run.stderr
    import copy

    from sdod.data.dataset import decode_rgb

    torch_p = Predictor.load(with_onnx)
    onnx_p = Predictor.load(with_onnx, backend="onnxruntime")
    exact = copy.deepcopy(torch_p.model).double()
    # Formula weights are no trained network: on real photographs their VGG amplifies float32
    # rounding to ~1% (torch's float32 result is up to 0.036 from float64 at outputs of ~4).
    # So onnxruntime is held to what float32 allows: as close to the exact (float64) result
    # as torch's own float32 result is.
    for path in sorted(IMAGES.glob("*.jpg"))[:4]:  # the exported graph takes the uint8 image
        batch = torch_p.transform(decode_rgb(path.read_bytes(), path.name)).unsqueeze(0)
        with torch.no_grad():
            ours, truth = torch_p.run(batch), exact(batch)
        for a, b, e in zip(ours, onnx_p.run(batch), truth, strict=True):
            rounding = float((a.double() - e).abs().max())
            assert float((b.double() - e).abs().max()) <= 3 * rounding + 1e-4, path.name


def test_resnet_from_a_module_checkpoint(tmp_path: Path) -> None:
    """`Module.save_checkpoint` naming (`arg:`/`aux:`), moving statistics after the weights."""
    network = "ssd_512_resnet50_v1_voc"
    params = formula_params(network)
    stats = ("running_mean", "running_var", "moving_mean", "moving_var")
    named = {f"arg:{k}": v for k, v in params.items() if not k.endswith(stats)}
    named |= {f"aux:{k}": v for k, v in params.items() if k.endswith(stats)}
    (tmp_path / "r-0000.params").write_bytes(params_bytes(named))
    result = tools.import_gluoncv(
        params=str(tmp_path / "r-0000.params"), network=network, out=str(tmp_path / "r.tar.gz")
    )
    assert result["classes"] == ["0", "1", "2", "3"]  # 4 classes: not VOC's 20, so the ids
    ref = np.load(NETS / f"{network}.npz")
    cls, box = _raw(Predictor.load(tmp_path / "r.tar.gz"), network)
    np.testing.assert_allclose(cls, ref["eval_cls_preds"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(box, ref["eval_box_preds"], rtol=0, atol=1e-3)


def test_evaluate_and_incremental_training_take_it(imported: Path, tmp_path: Path) -> None:
    from safetensors.torch import load

    data = tmp_path / "data"
    make_sample_data(data, train=2, validation=1, num_classes=4, seed=5)
    evaluation = tools.evaluate(
        model=str(imported), images=str(data / "validation"),
        annotations=str(data / "validation_annotation"),
    )  # fmt: skip
    assert 0.0 <= evaluation.to_dict()["mAP"] <= 1.0
    spec = {
        "TrainingJobName": "from-gluoncv",
        "HyperParameters": {
            "base_network": "vgg-16", "num_classes": "4", "num_training_samples": "2",
            "use_pretrained_model": "0", "epochs": "1", "mini_batch_size": "2",
            "learning_rate": "1e-10", "image_shape": "300",
        },
        "InputDataConfig": [
            {"ChannelName": ch, "DataSource": {"S3DataSource": {"S3Uri": str(data / ch)}}}
            for ch in ("train", "validation", "train_annotation", "validation_annotation")
        ] + [{"ChannelName": "model", "ContentType": "application/x-sagemaker-model",
              "DataSource": {"S3DataSource": {"S3Uri": str(imported)}}}],
        "OutputDataConfig": {"S3OutputPath": str(tmp_path / "out")},
    }  # fmt: skip
    outcome = stages.train(job_spec=spec, job_root=str(tmp_path / "job"), log=lambda _: None)
    assert outcome.status == "Completed", outcome.message
    trained = read_artifact(outcome.artifact)
    assert trained.model_config.variant == "gluoncv"
    before, after = load(read_artifact(imported).weights), load(trained.weights)
    assert set(before) == set(after)
    for key in before:  # learning rate 1e-10: the imported weights, carried through
        assert (after[key] - before[key]).abs().max() < 1e-5, key

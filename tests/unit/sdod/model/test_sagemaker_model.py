"""The networks built from SageMaker's graphs compute what MXNet computed, within the
fixture README's tolerances (anchors 1e-6, class probabilities 5e-4, logits 2e-3, box
offsets 1e-3), on MXNet's own preprocessed inputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sdod.model.networks import build_network
from sdod.model.sagemaker import load_model, read_archive
from sdod.model.sagemaker_model import SageMakerSSD

SM = Path(__file__).resolve().parents[3] / "fixtures" / "mxnet" / "sagemaker_ssd"
ARTIFACTS = ("vgg16_reduced_300_c3", "resnet50_300_c2")
SAVED = ("00_astronaut", "05_motorcycle_right_small", "17_coins_gray")


@pytest.fixture(scope="module", params=ARTIFACTS)
def loaded(request: pytest.FixtureRequest) -> tuple[str, SageMakerSSD]:
    return request.param, load_model(read_archive(SM / request.param / "model.tar.gz"))


def test_anchors_match_multibox_prior(loaded: tuple[str, SageMakerSSD]) -> None:
    artifact, model = loaded
    want = np.load(SM / artifact / "anchors.npy")[0]
    assert np.abs(model.corners.numpy() - want).max() <= 1e-6
    # sdod's own convention, for training: (cx, cy, w, h) in input pixels
    centre = (want[:, :2] + want[:, 2:]) / 2 * 300
    assert np.abs(model.anchors[:, :2].numpy() - centre).max() <= 1e-4


def test_logits_probabilities_and_box_offsets_match_mxnet(loaded: tuple[str, SageMakerSSD]) -> None:
    artifact, model = loaded
    folder = SM / artifact
    batch = torch.cat([torch.from_numpy(np.load(folder / f"input_{i}.npy")) for i in SAVED])
    with torch.no_grad():
        cls, box = model(batch)
    for k, image in enumerate(SAVED):
        logits = cls[k].T.numpy()  # (K + 1, N), MXNet's layout
        probs = torch.softmax(cls[k], dim=-1).T.numpy()
        loc = box[k].reshape(-1).numpy()
        assert np.abs(logits - np.load(folder / f"cls_logits_{image}.npy")[0]).max() <= 2e-3
        assert np.abs(probs - np.load(folder / f"cls_prob_{image}.npy")[0]).max() <= 5e-4
        assert np.abs(loc - np.load(folder / f"loc_pred_{image}.npy")[0]).max() <= 1e-3


def test_uint8_input_is_mean_subtracted_without_std(loaded: tuple[str, SageMakerSSD]) -> None:
    _, model = loaded
    image = torch.full((1, 3, 4, 4), 200, dtype=torch.uint8)
    out = model.normalize(image)
    assert out[0, :, 0, 0].tolist() == [77.0, 83.0, 96.0]


def test_fix_gamma_batchnorm_ignores_the_stored_gamma(loaded: tuple[str, SageMakerSSD]) -> None:
    artifact, model = loaded
    norms = [m for m in model.net.layers.values() if isinstance(m, torch.nn.BatchNorm2d)]
    if artifact == "vgg16_reduced_300_c3":
        assert norms == []  # vgg16_reduced has none: its L2Normalization scale instead
        assert model.net.scales["relu4_3_scale"].shape == (1, 512, 1, 1)
        return
    assert len(norms) == 50
    bn = model.net.layers["bn_data"]
    assert isinstance(bn, torch.nn.BatchNorm2d) and bn.eps == 2e-5
    assert torch.all(bn.weight == 1) and not bn.weight.requires_grad
    assert model.net.layers["bn0"].weight.requires_grad


def _symbol(artifact: str) -> dict:
    import json
    import tarfile

    with tarfile.open(SM / artifact / "model.tar.gz") as tar:  # the symbol is the first member
        member = next(m for m in tar if m.name.endswith("-symbol.json"))
        data = tar.extractfile(member)
        assert data is not None
        loaded: dict = json.loads(data.read())
        return loaded


@pytest.fixture(scope="module")
def resnet_symbol() -> dict:
    return _symbol("resnet50_300_c2")


def test_a_later_jobs_nms_threshold_replaces_the_graphs(resnet_symbol: dict) -> None:
    """model_config.json's nms_threshold (an incremental job's hyperparameter) is the one
    decoding uses, as SageMaker rebuilds its graph with the job's `nms_thresh`."""
    from sdod.artifact import ModelConfig

    network = {"symbol": resnet_symbol, "detection": {"nms_threshold": 0.45, "nms_topk": 400}}
    for nms in (0.45, 0.3):
        config = ModelConfig("resnet-50", 2, 300, nms_threshold=nms, variant="sagemaker")
        model = build_network(replace(config, network=network))
        assert model.detection.nms_threshold == nms and model.detection.nms_topk == 400
        assert model.network["detection"] == {"nms_threshold": nms, "nms_topk": 400}
    assert network["detection"]["nms_threshold"] == 0.45  # the caller's dict is left alone


def test_synchronised_batchnorm_runs_the_fixed_gamma_layers(resnet_symbol: dict) -> None:
    """DDP on GPUs converts every BatchNorm to SyncBatchNorm; `bn_data` (fix_gamma) still runs."""
    from sdod.artifact import ModelConfig

    config = ModelConfig(
        "resnet-50", 2, 300, variant="sagemaker", network={"symbol": resnet_symbol}
    )
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(build_network(config)).eval()
    assert isinstance(model.net.layers["bn_data"], torch.nn.SyncBatchNorm)
    with torch.no_grad():
        cls, box = model(torch.zeros(1, 3, 300, 300, dtype=torch.uint8))
    assert cls.shape == (1, 2268, 3) and box.shape == (1, 2268, 4)

"""SageMaker's networks built from example/ssd's presets (what `base_network=vgg-16` and
`resnet-50` train): the symbol MXNet's deploy.py wrote, node for node; the fixture
artifacts' parameters name for name and shape for shape; MXNet's anchors and outputs with
the fixture's weights; example/ssd's initialisation; ImageNet weights onto the base
network."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sdod.errors import UserError
from sdod.model.mxnet_params import read_params_bytes
from sdod.model.networks import build_network
from sdod.model.sagemaker_layout import (
    backbone_names,
    build_layout,
    initialise,
    load_backbone,
    vgg16_reduced_from_torchvision,
)
from sdod.model.sagemaker_symbol import deploy_symbol

SM = Path(__file__).resolve().parents[3] / "fixtures" / "mxnet" / "sagemaker_ssd"
ARTIFACTS = [("vgg16_reduced_300_c3", "vgg-16", 3), ("resnet50_300_c2", "resnet-50", 2)]
SAVED = ("00_astronaut", "05_motorcycle_right_small", "17_coins_gray")


def _params(artifact: str) -> dict[str, np.ndarray]:
    with tarfile.open(SM / artifact / "model.tar.gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".params"))
        data = tar.extractfile(member)
        assert data is not None
        return read_params_bytes(data.read(), member.name)


@pytest.fixture(scope="module", params=ARTIFACTS, ids=[a[1] for a in ARTIFACTS])
def built(request: pytest.FixtureRequest) -> tuple[str, object, dict[str, np.ndarray]]:
    artifact, base, classes = request.param
    model = build_layout(base, classes, 300)
    return artifact, model, _params(artifact)


@pytest.mark.parametrize(("artifact", "base", "classes"), ARTIFACTS)
def test_the_symbol_is_the_one_mxnets_deploy_wrote(artifact: str, base: str, classes: int) -> None:
    want = json.loads((SM / artifact / "deploy_model_algo_1-symbol.json").read_text())
    assert deploy_symbol(base, 300, classes, nms_threshold=0.45, nms_topk=400) == want


def test_parameters_name_for_name_and_shape_for_shape(built: tuple) -> None:
    _, model, arrays = built
    ours = {f"{kind}:{name}": tuple(model.net.tensor(name).shape) for name, kind in model.net.graph.params.items()}  # fmt: skip
    theirs = {key: tuple(value.shape) for key, value in arrays.items()}
    assert ours == theirs


def test_with_the_fixture_weights_it_computes_mxnets_anchors_and_outputs(built: tuple) -> None:
    artifact, model, arrays = built
    model.load_mxnet(arrays, artifact)
    model.eval()
    assert np.abs(model.corners.numpy() - np.load(SM / artifact / "anchors.npy")[0]).max() <= 1e-6
    batch = torch.cat([torch.from_numpy(np.load(SM / artifact / f"input_{i}.npy")) for i in SAVED])
    with torch.no_grad():
        cls, box = model(batch)
    for k, image in enumerate(SAVED):
        logits = cls[k].T.numpy()
        assert np.abs(logits - np.load(SM / artifact / f"cls_logits_{image}.npy")[0]).max() <= 2e-3
        loc = box[k].reshape(-1).numpy()
        assert np.abs(loc - np.load(SM / artifact / f"loc_pred_{image}.npy")[0]).max() <= 1e-3


@pytest.mark.parametrize(
    ("base", "shape", "maps", "anchors"),
    [
        # seven maps from 448 up; the last extra layer (3x3, stride 1, pad 1) keeps 2x2, so
        # example/ssd's 512 network has 24576 anchors where GluonCV's has 24564
        ("vgg-16", 512, [64, 32, 16, 8, 4, 2, 2], 24576),
        ("vgg-16", 448, [56, 28, 14, 7, 4, 2, 2], None),
        ("vgg-16", 300, [38, 19, 10, 5, 3, 1], 8732),
        ("resnet-50", 512, [32, 16, 8, 4, 2, 1], 6132),
        ("resnet-50", 300, [19, 10, 5, 3, 2, 1], 2268),
    ],
)
def test_presets_at_other_shapes(
    base: str, shape: int, maps: list[int], anchors: int | None
) -> None:
    model = build_layout(base, 4, shape)
    assert [p["feature"][0] for p in model.priors] == maps
    if anchors is not None:
        assert model.anchors.shape == (anchors, 4)
    steps = [p["steps"][0] for p in model.priors]
    explicit = (base, shape) in (("vgg-16", 300), ("vgg-16", 512))
    assert all(s > 0 for s in steps) if explicit else all(s <= 0 for s in steps)
    cls, box = model(torch.zeros(1, 3, shape, shape, dtype=torch.uint8))
    assert cls.shape == (1, model.anchors.shape[0], 5) and box.shape[1] == model.anchors.shape[0]


def test_initialisation_is_example_ssds(built: tuple) -> None:
    _, model, _ = built
    initialise(model, torch.Generator().manual_seed(0))
    params = model.net.graph.params
    for name in params:
        value = model.net.tensor(name).detach()
        if name.endswith("_scale"):
            assert torch.all(value == 20)
        elif name.endswith(("_bias", "_beta", "_moving_mean")):
            assert torch.all(value == 0), name
        elif name.endswith(("_gamma", "_moving_var")):
            assert torch.all(value == 1), name
        else:  # Xavier: uniform within sqrt(3 / fan average), and filling that range
            shape = value.shape
            field = int(np.prod(shape[2:]))
            bound = (3 / ((shape[0] + shape[1]) * field / 2)) ** 0.5
            assert value.abs().max() <= bound and value.abs().max() > 0.9 * bound, name


def test_imagenet_weights_fill_the_base_network_only(built: tuple) -> None:
    _, model, arrays = built
    initialise(model, torch.Generator().manual_seed(1))
    head = next(n for n in model.net.graph.params if "cls_pred_conv_weight" in n)
    before = model.net.tensor(head).detach().clone()
    extra = {**arrays, "arg:fc1000_weight": np.zeros((10, 2), np.float32)}  # a classifier
    count = load_backbone(model, extra, "imagenet.params")
    names = backbone_names(model)
    assert count == len(names) and not any(n.startswith("multi_feat") for n in names)
    for name in names:
        want = arrays.get(f"arg:{name}", arrays.get(f"aux:{name}"))
        got = model.net.tensor(name).detach().numpy()
        if name == "bn_data_gamma":  # fix_gamma: MXNet uses 1 whatever is stored
            assert np.all(got == 1)
        else:
            assert np.array_equal(got, want), name
    assert torch.equal(model.net.tensor(head).detach(), before)
    first = names[1]
    with pytest.raises(UserError, match=f"missing .*{first}"):
        load_backbone(model, {k: v for k, v in arrays.items() if not k.endswith(first)}, "x")


def test_torchvisions_vgg16_becomes_vgg16_reduced_by_subsampling_fc6_and_fc7() -> None:
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    widths = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    state: dict[str, torch.Tensor] = {}
    cin = 3
    for index, width in zip(convs, widths, strict=True):
        state[f"features.{index}.weight"] = torch.randn(width, cin, 3, 3)
        state[f"features.{index}.bias"] = torch.randn(width)
        cin = width
    state["classifier.0.weight"] = torch.randn(4096, 512 * 7 * 7)
    state["classifier.0.bias"] = torch.randn(4096)
    state["classifier.3.weight"] = torch.randn(4096, 4096)
    state["classifier.3.bias"] = torch.randn(4096)
    out = vgg16_reduced_from_torchvision(state)
    assert np.array_equal(out["conv4_2_weight"], state["features.19.weight"].numpy())
    fc6 = state["classifier.0.weight"].numpy().reshape(4096, 512, 7, 7)
    assert out["fc6_weight"].shape == (1024, 512, 3, 3)
    assert out["fc6_weight"][5, 7, 2, 1] == fc6[20, 7, 6, 3]
    assert out["fc6_bias"][5] == state["classifier.0.bias"][20]
    assert out["fc7_weight"].shape == (1024, 1024, 1, 1)
    assert out["fc7_weight"][3, 9, 0, 0] == state["classifier.3.weight"][12, 36]
    model = build_layout("vgg-16", 2, 300)
    assert load_backbone(model, out, "torchvision") == len(backbone_names(model)) == 30
    with pytest.raises(UserError, match="not torchvision's VGG-16"):
        vgg16_reduced_from_torchvision({"features.0.weight": torch.zeros(1)})


def test_a_model_trained_before_keeps_its_layout_and_predicts(tmp_path: Path) -> None:
    """model_config.json without `variant` (sdod's vgg-16 before SageMaker's layout became
    the default) still builds that network, loads its weights and predicts via the CLI."""
    import subprocess
    import sys

    from sdod.artifact import Artifact, ModelConfig, weights_bytes, write_artifact
    from sdod.model.ssd import SSD

    config = ModelConfig("vgg-16", 2, 300, ("cat", "dog"))
    old = build_network(config)
    assert isinstance(old, SSD) and "variant" not in config.to_dict()
    path = write_artifact(
        tmp_path / "model.tar.gz",
        Artifact(weights_bytes(old.state_dict()), {}, config.to_dict(), {}),
    )
    image = SM.parent / "images" / "00_astronaut.jpg"
    run = subprocess.run(
        [sys.executable, "-m", "sdod", "predict", "--model", str(path), str(image)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "prediction" in json.loads(run.stdout)

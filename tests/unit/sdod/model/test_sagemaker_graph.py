"""Reading SageMaker's symbol JSON: the graph is walked node by node and anything sdod does
not implement is refused with the node named."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from sdod.errors import UserError
from sdod.model.sagemaker_graph import family, read_graph
from sdod.model.sagemaker_model import build

SM = Path(__file__).resolve().parents[3] / "fixtures" / "mxnet" / "sagemaker_ssd"


def _deploy(artifact: str) -> dict[str, Any]:
    return json.loads((SM / artifact / "deploy_model_algo_1-symbol.json").read_text())


def _bytes(symbol: dict[str, Any]) -> bytes:
    return json.dumps(symbol).encode()


def _node(symbol: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in symbol["nodes"] if n["name"] == name)


def test_training_and_deploy_symbols_give_the_same_network() -> None:
    with tarfile.open(SM / "vgg16_reduced_300_c3" / "model.tar.gz") as tar:
        member = tar.extractfile("model_algo_1-symbol.json")
        assert member is not None
        training = member.read()
    train = read_graph(training, "train")
    deploy = read_graph(_bytes(_deploy("vgg16_reduced_300_c3")), "deploy")
    assert family(train) == family(deploy) == "vgg-16"
    assert train.detection == deploy.detection
    assert train.detection.nms_threshold == 0.45 and train.detection.nms_topk == 400
    assert not train.detection.force_suppress and train.detection.clip
    names = [train.node(i).name for i in train.order]
    assert names[0] == "conv1_1" and "relu4_3_norm" in names and "fc7" in names
    assert "multibox_target" not in names and "cls_prob" not in names  # training-only nodes
    assert {"relu4_3_scale": "arg", "conv1_1_weight": "arg"}.items() <= train.params.items()


NETWORKS = [
    ("vgg16_reduced_300_c3", "vgg-16", 3, 8732, [4, 6, 6, 6, 4, 4]),
    ("resnet50_300_c2", "resnet-50", 2, 2268, [4, 6, 6, 6, 4, 4]),
]


@pytest.mark.parametrize(("artifact", "base", "classes", "anchors", "per_cell"), NETWORKS)
def test_the_network_built_from_the_graph(
    artifact: str, base: str, classes: int, anchors: int, per_cell: list[int]
) -> None:
    import torch

    with torch.device("meta"):
        model = build(_bytes(_deploy(artifact)), 300, artifact)
    assert model.config.base_network == base and model.config.num_classes == classes
    assert model.anchors.shape == (anchors, 4)
    assert [p["per_cell"] for p in model.priors] == per_cell
    if base == "resnet-50":
        assert [p["source"] for p in model.priors][:2] == ["_plus12", "_plus15"]
        assert model.priors[0]["feature"] == [19, 19]
        assert "bn_data" in model.layer_names()


def test_other_image_shapes_rebuild_the_anchors_from_the_graph() -> None:
    import torch

    with torch.device("meta"):
        model = build(_bytes(_deploy("resnet50_300_c2")), 512, "resnet at 512")
    assert [p["feature"] for p in model.priors] == [
        [32, 32],
        [16, 16],
        [8, 8],
        [4, 4],
        [2, 2],
        [1, 1],
    ]
    with pytest.raises(UserError, match=r"relu4_3_anchors.*image_shape 512.*another image_shape"):
        build(_bytes(_deploy("vgg16_reduced_300_c3")), 512, "vgg at 512")


def _refused(symbol: dict[str, Any], *needles: str) -> str:
    with pytest.raises(UserError) as info:
        read_graph(_bytes(symbol), "model_algo_1-symbol.json")
    for needle in needles:
        assert needle in str(info.value)
    return str(info.value)


def test_an_unknown_op_is_refused_with_the_node_and_op_named() -> None:
    symbol = _deploy("resnet50_300_c2")
    _node(symbol, "stage2_unit1_relu1")["op"] = "LeakyReLU"
    _refused(symbol, "'stage2_unit1_relu1'", "LeakyReLU", "not an op")


def test_unknown_attributes_and_values_are_refused() -> None:
    symbol = _deploy("vgg16_reduced_300_c3")
    _node(symbol, "conv3_1")["attrs"]["layout"] = "NHWC"
    _refused(symbol, "'conv3_1'", "layout")
    symbol = _deploy("vgg16_reduced_300_c3")
    _node(symbol, "pool2")["attrs"]["pool_type"] = "lp"
    _refused(symbol, "'pool2'", "pool_type")
    symbol = _deploy("vgg16_reduced_300_c3")
    _node(symbol, "fc6")["attrs"]["weird"] = "1"
    _refused(symbol, "'fc6'", "weird")
    symbol = _deploy("vgg16_reduced_300_c3")
    _node(symbol, "relu4_3_anchors")["attrs"]["sizes"] = "(0.1,abc)"
    _refused(symbol, "'relu4_3_anchors'", "sizes")
    symbol = _deploy("vgg16_reduced_300_c3")
    _node(symbol, "detection")["attrs"]["background_id"] = "2"
    _refused(symbol, "'detection'", "background_id")


def test_a_symbol_without_one_detection_node_is_refused() -> None:
    symbol = _deploy("resnet50_300_c2")
    _node(symbol, "detection")["op"] = "Identity"
    _refused(symbol, "0 _contrib_MultiBoxDetection nodes")
    _refused({"nodes": []}, "no 'nodes' list")
    with pytest.raises(UserError, match="not a JSON symbol"):
        read_graph(b"\x80\x04pickle", "x-symbol.json")


def test_a_base_network_that_is_neither_vgg16_reduced_nor_resnet_is_refused() -> None:
    symbol = _deploy("vgg16_reduced_300_c3")
    norm = _node(symbol, "relu4_3_norm")
    norm["op"], norm["attrs"] = "_copy", {}
    graph = read_graph(_bytes(symbol), "model_algo_1-symbol.json")
    with pytest.raises(UserError, match=r"'conv1_1'.*neither example/ssd's vgg16_reduced"):
        family(graph)

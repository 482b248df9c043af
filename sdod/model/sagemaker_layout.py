"""SageMaker's networks as sdod trains them (`base_network=vgg-16|resnet-50`).

`layout_network` describes the network SageMaker's algorithm (MXNet's `example/ssd`)
builds for a job: its symbol, written by `sagemaker_symbol.deploy_symbol`, stored in
`model_config.json` (variant `sagemaker`, as an imported SageMaker model), so the trained
model is rebuilt from its own graph wherever it is read; `build_layout` builds it.
`initialise` draws the weights as example/ssd's `train_net.py` does (`mx.init.Xavier()`:
uniform, fan average, magnitude 3; biases 0; BatchNorm gamma 1, beta 0, moving mean 0,
variance 1; a node's own `__init__` attribute first: the L2 normalisation scale 20, the
predictor biases 0), and `load_backbone` copies ImageNet weights onto the base network
by MXNet's parameter names (`sdod/model/pretrained.py` finds the file).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sdod.errors import UserError
from sdod.model.sagemaker_symbol import NETWORKS, deploy_symbol

if TYPE_CHECKING:
    from sdod.model.sagemaker_model import SageMakerSSD

SOURCE = "sdod example/ssd preset"  # model_config.json network.source of a trained layout
XAVIER_MAGNITUDE = 3.0  # mx.init.Xavier()'s defaults: rnd_type uniform, factor_type avg


def layout_network(
    base_network: str,
    num_classes: int,
    image_shape: int,
    nms_threshold: float = 0.45,
    nms_topk: int = 400,
) -> dict[str, Any]:
    """`model_config.json`'s `network` (variant `sagemaker`) of SageMaker's network for
    these hyperparameters: its symbol, and which preset wrote it."""
    if base_network not in NETWORKS:
        raise UserError(f"{base_network} has no SageMaker layout (only {', '.join(NETWORKS)})")
    symbol = deploy_symbol(
        base_network, image_shape, num_classes, nms_threshold=nms_threshold, nms_topk=nms_topk
    )
    return {"source": SOURCE, "preset": NETWORKS[base_network], "symbol": symbol}


def build_layout(
    base_network: str,
    num_classes: int,
    image_shape: int,
    nms_threshold: float = 0.45,
    nms_topk: int = 400,
) -> SageMakerSSD:
    """SageMaker's (untrained) network for these hyperparameters."""
    from sdod.model.sagemaker_model import build

    network = layout_network(base_network, num_classes, image_shape, nms_threshold, nms_topk)
    model = build(json.dumps(network["symbol"]).encode(), image_shape, f"{base_network} preset")
    model.network = network
    return model


def _init_attr(raw: str, where: str) -> float | None:
    """The constant of a node's `__init__` attribute (`["constant", {"value": v}]`,
    `["zero", {}]`, `["one", {}]`); None for anything else."""
    try:
        kind, args = json.loads(raw)
    except (ValueError, TypeError):
        raise UserError(f"{where}: __init__ {raw!r} is not MXNet's [name, args] form") from None
    if kind == "constant" and isinstance(args, dict):
        return float(args.get("value", 0.0))
    return {"zero": 0.0, "one": 1.0}.get(kind)


def _xavier(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """mx.init.Xavier(): U(-s, s), s = sqrt(3 / ((fan_in + fan_out) / 2))."""
    field = math.prod(shape[2:]) if len(shape) > 2 else 1
    fan_in, fan_out = shape[1] * field, shape[0] * field
    scale = math.sqrt(XAVIER_MAGNITUDE / ((fan_in + fan_out) / 2.0))
    return (torch.rand(shape, generator=generator) * 2 - 1) * scale


def _default(name: str, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """MXNet's Initializer by name suffix (the attribute-less parameters)."""
    if name.endswith(("_gamma", "_moving_var")):
        return torch.ones(shape)
    if name.endswith("_weight"):
        return _xavier(shape, generator)
    return torch.zeros(shape)  # _bias, _beta, _moving_mean


@torch.no_grad()
def initialise(model: SageMakerSSD, generator: torch.Generator | None = None) -> None:
    """Every parameter and BatchNorm statistic as example/ssd's training starts them."""
    net = model.net
    for node in net.graph.nodes:
        if node.name not in net.graph.params:
            continue
        target = net.tensor(node.name)
        raw = node.attrs.get("__init__")
        value = _init_attr(raw, f"{net.graph.where}: {node.name}") if raw else None
        if value is None:
            target.copy_(_default(node.name, tuple(target.shape), generator))
        else:
            target.fill_(value)
    for key in net.fixed_gamma:
        net.layers[key].weight.fill_(1.0)  # type: ignore[operator]


def backbone_names(model: SageMakerSSD) -> list[str]:
    """The base network's parameter names (what ImageNet weights cover): every parameter
    upstream of the first SSD layer (no `multi_feat_*`, predictor or scale)."""
    heads = ("_loc_pred_conv", "_cls_pred_conv", "_scale")
    return [
        name
        for name in model.net.graph.params
        if not name.startswith("multi_feat_") and not any(h in name for h in heads)
    ]


@torch.no_grad()
def load_backbone(model: SageMakerSSD, arrays: Mapping[str, np.ndarray], where: str) -> int:
    """Copy ImageNet weights (MXNet names, `arg:`/`aux:` prefixes optional) onto the base
    network; UserError naming the first parameter missing or of another shape. Returns the
    number of tensors copied; arrays the base network lacks (a classifier) are ignored."""
    bare = {key.split(":", 1)[-1]: value for key, value in arrays.items()}
    names = backbone_names(model)
    missing = [n for n in names if n not in bare]
    if missing:
        raise UserError(
            f"{where}: {len(missing)} of the {len(names)} base-network parameters of "
            f"{model.config.base_network} are missing (e.g. {missing[0]!r}): this is not the "
            f"ImageNet file of SageMaker's {NETWORKS[model.config.base_network]}"
        )
    for name in names:
        target, value = model.net.tensor(name), bare[name]
        if tuple(value.shape) != tuple(target.shape):
            raise UserError(
                f"{where}: {name} has shape {tuple(value.shape)}, the network needs "
                f"{tuple(target.shape)}"
            )
        target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
    for key in model.net.fixed_gamma:
        model.net.layers[key].weight.fill_(1.0)  # type: ignore[operator]
    return len(names)


def vgg16_reduced_from_torchvision(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """torchvision's VGG-16 (ImageNet) as MXNet's `vgg16_reduced`: the 13 convolutions by
    name, `fc6` and `fc7` subsampled from the classifier as the SSD paper's reduced VGG
    (fc6: every 4th of 4096 filters, its 7x7 window taken every 3rd tap, a 3x3 kernel
    used with dilation 6; fc7: every 4th filter and every 4th input)."""
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    names = [
        f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)
    ]
    try:
        out = {}
        for index, name in zip(convs, names, strict=True):
            out[f"{name}_weight"] = _np(state[f"features.{index}.weight"])
            out[f"{name}_bias"] = _np(state[f"features.{index}.bias"])
        fc6 = _np(state["classifier.0.weight"]).reshape(4096, 512, 7, 7)
        out["fc6_weight"] = np.ascontiguousarray(fc6[::4, :, ::3, ::3])
        out["fc6_bias"] = _np(state["classifier.0.bias"])[::4].copy()
        fc7 = _np(state["classifier.3.weight"])
        out["fc7_weight"] = np.ascontiguousarray(fc7[::4, ::4].reshape(1024, 1024, 1, 1))
        out["fc7_bias"] = _np(state["classifier.3.bias"])[::4].copy()
    except (KeyError, ValueError) as exc:
        raise UserError(f"not torchvision's VGG-16 state dict ({exc})") from None
    return out


def _np(value: Any) -> np.ndarray:
    return value.detach().cpu().float().numpy() if isinstance(value, torch.Tensor) else value

"""GluonCV SSD weights onto sdod's networks, without MXNet.

GluonCV's `ssd_300_vgg16_atrous_*`, `ssd_512_vgg16_atrous_*` and `ssd_512_resnet50_v1_*`
have sdod's `vgg-16` and `resnet-50` layouts (the resnet in its `gluoncv` variant, see
`sdod/model/backbones.py`), so their parameters map one to one, in order:

- base-network convolutions onto sdod's convolutions, BatchNorms onto BatchNorms and the
  L2Norm scale onto the L2Norm scale, each in the network's forward order;
- class predictors onto `class_heads`, box predictors onto `box_heads`, map by map.

A parameter's part comes from its name: Gluon's structural names (`class_predictors.0.…`)
or the exported names (`ssd0_ssd0_convpredictor0_conv0_weight`: GluonCV makes a class and a
box predictor per map, so even-numbered predictors are class predictors, odd ones box
predictors). Anchor grids are constants and are left out (sdod's are GluonCV's). VGG's
`init_scale` (GluonCV's VGG takes normalised input and multiplies it by std × 255) is
folded into the first convolution, which is exact. GluonCV's expanders use MXNet's
symbolic BatchNorm, whose gamma is fixed at 1: the import writes 1 there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from sdod.errors import UserError
from sdod.model.anchors import preset_for
from sdod.model.networks import build_network
from sdod.model.ssd import SSD, STD

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
NETWORK_NAME = re.compile(r"ssd_(300|512)_(vgg16_atrous|resnet50_v1)(?:_(\w+))?")
BASES = {"vgg16_atrous": "vgg-16", "resnet50_v1": "resnet-50"}
GLUONCV_NETWORKS = ("ssd_300_vgg16_atrous", "ssd_512_vgg16_atrous", "ssd_512_resnet50_v1")
FIELDS = (  # longest first: "running_mean" before "mean"-less fields
    "running_mean", "running_var", "moving_mean", "moving_var", "init_scale",
    "weight", "bias", "gamma", "beta", "scale",
)  # fmt: skip
DEFAULT_INIT_SCALE = tuple(s * 255 for s in STD)


@dataclass
class Layer:
    """One GluonCV layer: its name (without the field), part and tensors by field."""

    name: str
    part: str  # features | class | box
    fields: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if "gamma" in self.fields or "running_mean" in self.fields:
            return "batchnorm"
        if "scale" in self.fields:
            return "l2norm"
        weight = self.fields.get("weight")
        return "conv" if weight is not None and weight.ndim == 4 else "other"


@dataclass(frozen=True)
class GluonNetwork:
    name: str
    base_network: str
    image_size: int
    dataset: str  # voc, coco, custom, … (the model-zoo suffix; "" without one)


def parse_network(name: str) -> GluonNetwork:
    """`ssd_300_vgg16_atrous_voc` -> vgg-16 at 300 (dataset voc)."""
    m = NETWORK_NAME.fullmatch(name.strip())
    if m is None or f"ssd_{m[1]}_{m[2]}" not in GLUONCV_NETWORKS:
        raise UserError(
            f"--network {name!r} is not a GluonCV SSD that sdod can take; use one of "
            f"{', '.join(n + '_<dataset>' for n in GLUONCV_NETWORKS)} "
            "(e.g. ssd_300_vgg16_atrous_voc)"
        )
    return GluonNetwork(name, BASES[m[2]], int(m[1]), m[3] or "")


def _split(name: str) -> tuple[str, str]:
    """`arg:ssd0_conv0_weight` -> (`ssd0_conv0`, `weight`); `features.0.bias` ->
    (`features.0`, `bias`); a name with no known field -> (name, "")."""
    bare = name.split(":", 1)[1] if name.startswith(("arg:", "aux:")) else name
    for f in FIELDS:
        for sep in ("_", "."):
            if bare.endswith(sep + f):
                return bare[: -len(f) - 1], f
    return bare, ""


def _part(layer: str) -> str:
    if "class_predictors" in layer:
        return "class"
    if "box_predictors" in layer:
        return "box"
    m = re.search(r"convpredictor(\d+)", layer)
    if m:
        return "class" if int(m[1]) % 2 == 0 else "box"
    return "features"


def group_layers(
    params: Mapping[str, np.ndarray], where: str
) -> tuple[list[Layer], np.ndarray | None]:
    """GluonCV's parameters as layers in first-appearance order, and VGG's init_scale."""
    layers: dict[str, Layer] = {}
    init_scale = None
    for name, value in params.items():
        layer, f = _split(name)
        if "anchor" in layer.lower() and not f:  # anchor grids: constants, sdod makes its own
            continue
        if f == "init_scale":
            init_scale = value
            continue
        if not f:
            raise UserError(
                f"{where}: parameter {name!r} is not a weight, bias, BatchNorm or L2Norm "
                "parameter of a GluonCV SSD: is this a GluonCV SSD's .params file?"
            )
        entry = layers.setdefault(layer, Layer(layer, _part(layer)))
        entry.fields["running_" + f[7:] if f.startswith("moving_") else f] = value
    for entry in layers.values():
        if entry.kind == "other":
            raise UserError(
                f"{where}: layer {entry.name!r} ({', '.join(entry.fields)}) is neither a "
                "convolution nor a BatchNorm: this is not a GluonCV SSD's .params file"
            )
    return list(layers.values()), init_scale


def _targets(model: SSD) -> dict[str, list[nn.Module]]:
    backbone = model.backbone
    body: nn.Module | None = getattr(backbone, "body", None)
    return {
        "conv": [m for m in backbone.modules() if isinstance(m, nn.Conv2d)],
        "batchnorm": [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)],
        "l2norm": [body] if body is not None and hasattr(body, "scale_weight") else [],
    }


def _copy(target: torch.Tensor | None, value: np.ndarray, what: str, where: str) -> None:
    assert target is not None
    if tuple(target.shape) != tuple(value.shape):
        if target.numel() == value.size and what.endswith("scale"):  # (1, C, 1, 1) -> (C,)
            value = value.reshape(target.shape)
        else:
            raise UserError(
                f"{where}: {what} has shape {tuple(value.shape)}, sdod's layer expects "
                f"{tuple(target.shape)}: the file is not this --network (or has other classes)"
            )
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def _load_conv(conv: nn.Conv2d, layer: Layer, where: str) -> None:
    _copy(conv.weight, layer.fields["weight"], f"{layer.name} weight", where)
    if "bias" in layer.fields:
        if conv.bias is None:
            raise UserError(f"{where}: {layer.name} has a bias that sdod's layer has not")
        _copy(conv.bias, layer.fields["bias"], f"{layer.name} bias", where)
    elif conv.bias is not None:
        with torch.no_grad():
            conv.bias.zero_()


def _load_batchnorm(bn: nn.BatchNorm2d, layer: Layer, where: str, fixed_gamma: bool) -> None:
    missing = {"beta", "running_mean", "running_var"} - set(layer.fields)
    if missing:
        raise UserError(f"{where}: BatchNorm {layer.name} lacks {', '.join(sorted(missing))}")
    gamma = layer.fields.get("gamma")
    if fixed_gamma or gamma is None:  # MXNet's fix_gamma: the scale is 1 whatever is stored
        gamma = np.ones(bn.num_features, np.float32)
    _copy(bn.weight, gamma, f"{layer.name} gamma", where)
    _copy(bn.bias, layer.fields["beta"], f"{layer.name} beta", where)
    _copy(bn.running_mean, layer.fields["running_mean"], f"{layer.name} running_mean", where)
    _copy(bn.running_var, layer.fields["running_var"], f"{layer.name} running_var", where)


def _in_order(layers: list[Layer], targets: list, kind: str, what: str, where: str) -> list:
    chosen = [layer for layer in layers if layer.kind == kind]
    if len(chosen) != len(targets):
        raise UserError(
            f"{where}: the file has {len(chosen)} {what} layer(s) of kind {kind}, sdod's network "
            f"has {len(targets)}: the file is not this --network"
        )
    return list(zip(chosen, targets, strict=True))


def load_gluoncv(model: SSD, params: Mapping[str, np.ndarray], where: str = "<params>") -> None:
    """Set `model` (an sdod SSD of the matching network) from GluonCV's parameters."""
    layers, init_scale = group_layers(params, where)
    features = [layer for layer in layers if layer.part == "features"]
    targets = _targets(model)
    extras = getattr(model.backbone, "extras", nn.ModuleList())
    expanders = {id(m) for m in extras.modules() if isinstance(m, nn.BatchNorm2d)}
    gluon_extras = model.config.variant == "gluoncv" and model.config.base_network == "resnet-50"
    for layer, conv in _in_order(features, targets["conv"], "conv", "base-network", where):
        _load_conv(conv, layer, where)
    for layer, bn in _in_order(features, targets["batchnorm"], "batchnorm", "base-network", where):
        _load_batchnorm(bn, layer, where, fixed_gamma=gluon_extras and id(bn) in expanders)
    for layer, body in _in_order(features, targets["l2norm"], "l2norm", "base-network", where):
        _copy(body.scale_weight, layer.fields["scale"], f"{layer.name} scale", where)
    if targets["l2norm"]:  # VGG: fold GluonCV's input scaling into conv1_1
        scale = np.asarray(init_scale if init_scale is not None else DEFAULT_INIT_SCALE)
        first = targets["conv"][0]
        assert isinstance(first, nn.Conv2d)
        with torch.no_grad():
            first.weight.mul_(torch.from_numpy(scale.astype(np.float32).reshape(1, 3, 1, 1)))
    for part, heads in (("class", model.class_heads), ("box", model.box_heads)):
        chosen = [layer for layer in layers if layer.part == part]
        for layer, head in _in_order(chosen, list(heads), "conv", f"{part}-predictor", where):
            _load_conv(head, layer, where)


def classes_in(params: Mapping[str, np.ndarray], network: GluonNetwork, where: str) -> int:
    """The number of foreground classes GluonCV's first class predictor was made for."""
    layers, _ = group_layers(params, where)
    heads = [layer for layer in layers if layer.part == "class"]
    if not heads:
        raise UserError(f"{where}: no class predictors (class_predictors / convpredictor0)")
    per_cell = preset_for(network.base_network, network.image_size).num_anchors()[0]
    channels = int(heads[0].fields["weight"].shape[0])
    if channels % per_cell or channels // per_cell < 2:
        raise UserError(
            f"{where}: the first class predictor has {channels} outputs, not a multiple of "
            f"{per_cell} anchors × (classes + 1): the file is not {network.name}"
        )
    return channels // per_cell - 1


def import_gluoncv(
    *,
    params: str,
    network: str,
    out: str,
    classes: list[str] | None = None,
    nms_threshold: float = 0.45,
) -> dict[str, object]:
    """A `model.tar.gz` (sdod's own, for predict, serve, evaluate, export-onnx and the model
    channel of incremental training) from a GluonCV SSD's `.params` file."""
    import hashlib

    from sdod.artifact import Artifact, ModelConfig, weights_bytes, write_artifact
    from sdod.hyperparameters import parse_hyperparameters
    from sdod.model.mxnet_params import file_bytes, read_params_bytes

    net = parse_network(network)
    data = file_bytes(params)  # read once: parsed, then hashed for the model's metrics
    arrays = read_params_bytes(data, params)
    num_classes = classes_in(arrays, net, params)
    classes = _class_names(classes, net, num_classes, params)
    config = ModelConfig(
        net.base_network, num_classes, net.image_size, tuple(classes or ()), nms_threshold,
        variant="gluoncv",
    )  # fmt: skip
    with torch.device("cpu"):
        model = build_network(config).eval()
    load_gluoncv(model, arrays, params)
    hp = parse_hyperparameters(
        {"base_network": net.base_network, "num_classes": num_classes, "num_training_samples": 1,
         "image_shape": net.image_size, "nms_threshold": nms_threshold, "use_pretrained_model": 0}
    )  # fmt: skip
    digest = hashlib.sha256(data).hexdigest()
    artifact = Artifact(
        weights=weights_bytes(model.state_dict()),
        hyperparams=hp.to_strings(),
        config=replace(config, anchor_count=int(model.anchors.shape[0])).to_dict(),
        metrics={"source": "gluoncv", "network": net.name, "params_sha256": digest},
    )
    path = write_artifact(out, artifact)
    return {
        "model": str(path),
        "network": net.name,
        "base_network": net.base_network,
        "image_shape": net.image_size,
        "num_classes": num_classes,
        "classes": list(config.names()),
        "params_sha256": digest,
    }


def _class_names(
    classes: list[str] | None, net: GluonNetwork, num_classes: int, params: str
) -> list[str] | None:
    """`--classes` checked against the class predictors; VOC's names for a `*_voc` network."""
    if classes is None and net.dataset == "voc" and num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    if classes is not None and len(classes) != num_classes:
        raise UserError(
            f"--classes names {len(classes)} classes, but {params} was trained for "
            f"{num_classes} (its class predictors have {num_classes + 1} outputs per anchor, "
            "background first)"
        )
    return classes

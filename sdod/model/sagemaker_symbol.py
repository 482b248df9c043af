"""The symbol JSON of SageMaker's Object Detection networks, written from their presets.

SageMaker's algorithm is MXNet's `example/ssd`: `base_network=vgg-16` is its
`vgg16_reduced`, `resnet-50` its pre-activation `resnet50`. `deploy_symbol` writes the
inference graph (`deploy.py`'s output) that example/ssd builds for a data shape, a class
count and the detection settings, node for node as MXNet 1.x serialises it: the same
names (MXNet's automatic ones included: `_plus12`, `transpose0`, `flatten1`), attributes,
parameter nodes and order. `sdod/model/sagemaker_model.py` builds the torch network from
it, so a network trained here is the network SageMaker trains, and its `.params` names are
MXNet's.

The presets are example/ssd's `get_config` numbers (`symbol/symbol_factory.py`): feature
layers, extra layers (1x1 to half the filters, at least 128, then 3x3), anchor sizes and
ratios per layer, the L2 normalisation of `relu4_3` (scale 20), and explicit steps at
the shapes the presets were tuned for (vgg16_reduced at 300 and 512). vgg16_reduced has
seven feature maps from a data shape of 448 up, six below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdod.errors import UserError

NETWORKS = {"vgg-16": "vgg16_reduced", "resnet-50": "resnet50"}
MXNET_VERSION = 10901  # the MXNet (1.9.1) whose serialisation this matches
VARIANCES = (0.1, 0.1, 0.2, 0.2)
RATIOS_3 = (1, 2, 0.5)
RATIOS_5 = (1, 2, 0.5, 3, 1.0 / 3)
SIZES_6 = ((0.1, 0.141), (0.2, 0.272), (0.37, 0.447), (0.54, 0.619), (0.71, 0.79), (0.88, 0.961))
SIZES_7 = (
    (0.07, 0.1025), (0.15, 0.2121), (0.3, 0.3674), (0.45, 0.5196),
    (0.6, 0.6708), (0.75, 0.8216), (0.9, 0.9721),
)  # fmt: skip
OUTPUTS = {
    "BatchNorm": 3,
    "Pooling": 2,
    "L2Normalization": 2,
}  # MXNet's output count per op (node_row_ptr)


@dataclass(frozen=True)
class Preset:
    """example/ssd's configuration of one network at one data shape (`get_config`)."""

    network: str
    from_layers: tuple[str, ...]  # "" = an extra layer on top of the previous one
    num_filters: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    sizes: tuple[tuple[float, ...], ...]
    ratios: tuple[tuple[float, ...], ...]
    normalizations: tuple[int, ...]
    steps: tuple[float, ...] = ()


def preset(base_network: str, data_shape: int) -> Preset:
    """The preset example/ssd uses for `base_network` (`vgg-16`/`resnet-50`) at `data_shape`."""
    if base_network not in NETWORKS:
        raise UserError(
            f"SageMaker's layouts exist for {', '.join(NETWORKS)}; {base_network} is not one"
        )
    if base_network == "resnet-50":
        return Preset(
            "resnet50", ("_plus12", "_plus15", "", "", "", ""), (-1, -1, 512, 256, 256, 128),
            (-1, -1, 2, 2, 2, 2), (-1, -1, 1, 1, 1, 1), SIZES_6,
            (RATIOS_3, RATIOS_5, RATIOS_5, RATIOS_5, RATIOS_3, RATIOS_3), (-1,) * 6,
        )  # fmt: skip
    if data_shape >= 448:
        steps = tuple(x / 512.0 for x in (8, 16, 32, 64, 128, 256, 512))
        return Preset(
            "vgg16_reduced", ("relu4_3", "relu7", "", "", "", "", ""),
            (512, -1, 512, 256, 256, 256, 256), (-1, -1, 2, 2, 2, 2, 1), (-1, -1, 1, 1, 1, 1, 1),
            SIZES_7, (RATIOS_3, *(RATIOS_5,) * 4, RATIOS_3, RATIOS_3), (20, *(-1,) * 6),
            steps if data_shape == 512 else (),
        )  # fmt: skip
    steps = tuple(x / 300.0 for x in (8, 16, 32, 64, 100, 300))
    return Preset(
        "vgg16_reduced", ("relu4_3", "relu7", "", "", "", ""), (512, -1, 512, 256, 256, 256),
        (-1, -1, 2, 2, 1, 1), (-1, -1, 1, 1, 0, 0), SIZES_6,
        (RATIOS_3, *(RATIOS_5,) * 3, RATIOS_3, RATIOS_3), (20, *(-1,) * 5),
        steps if data_shape == 300 else (),
    )  # fmt: skip


def _text(value: Any) -> str:
    """An attribute value as MXNet's Python front end writes it."""
    return str(value)


@dataclass(eq=False)
class _Node:
    op: str
    name: str
    attrs: dict[str, str] = field(default_factory=dict)
    inputs: list[tuple[_Node, int]] = field(default_factory=list)  # (node, version)


class _Builder:
    """Nodes made as MXNet's symbol API makes them: parameter nodes created with their op
    (carrying its attributes), automatic names counted per op."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def auto(self, prefix: str) -> str:
        n = self.counts.get(prefix, 0)
        self.counts[prefix] = n + 1
        return f"{prefix}{n}"

    @staticmethod
    def var(name: str, **attrs: Any) -> _Node:
        return _Node("null", name, {k: _text(v) for k, v in attrs.items()})

    def op(self, op: str, name: str, data: list[_Node], **attrs: Any) -> _Node:
        return _Node(op, name, {k: _text(v) for k, v in attrs.items()}, [(d, 0) for d in data])

    def conv(self, data: _Node, name: str, bias: _Node | None = None, **attrs: Any) -> _Node:
        node = self.op("Convolution", name, [data], **attrs)
        node.inputs.append((_Node("null", f"{name}_weight", dict(node.attrs)), 0))
        if not attrs.get("no_bias"):
            node.inputs.append((bias or _Node("null", f"{name}_bias", dict(node.attrs)), 0))
        return node

    def batchnorm(self, data: _Node, name: str, fix_gamma: bool) -> _Node:
        node = self.op("BatchNorm", name, [data], eps=2e-05, fix_gamma=fix_gamma, momentum=0.9)
        for suffix, init, version in (
            ("gamma", None, 0), ("beta", None, 0),
            ("moving_mean", '["zero", {}]', 1), ("moving_var", '["one", {}]', 1),
        ):  # fmt: skip
            extra = {"__init__": init} if init else {}
            node.inputs.append(
                (_Node("null", f"{name}_{suffix}", {**extra, **node.attrs}), version)
            )
        return node

    def relu(self, data: _Node, name: str) -> _Node:
        return self.op("Activation", name, [data], act_type="relu")


def _vgg16_reduced(b: _Builder, data: _Node) -> dict[str, _Node]:
    """example/ssd's vgg16_reduced up to relu7; its named layers."""
    named: dict[str, _Node] = {}
    x = data
    for block, (convs, width) in enumerate(((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)), 1):
        for i in range(1, convs + 1):
            x = b.conv(x, f"conv{block}_{i}", kernel=(3, 3), num_filter=width, pad=(1, 1))
            x = named[f"relu{block}_{i}"] = b.relu(x, f"relu{block}_{i}")
        if block == 5:
            x = b.op(
                "Pooling", "pool5", [x], kernel=(3, 3), pad=(1, 1), pool_type="max", stride=(1, 1)
            )
        elif block == 3:  # ceil: 75 -> 38 at 300
            x = b.op(
                "Pooling",
                "pool3",
                [x],
                kernel=(2, 2),
                pool_type="max",
                pooling_convention="full",
                stride=(2, 2),
            )
        else:
            x = b.op("Pooling", f"pool{block}", [x], kernel=(2, 2), pool_type="max", stride=(2, 2))
    x = b.conv(x, "fc6", dilate=(6, 6), kernel=(3, 3), num_filter=1024, pad=(6, 6))
    x = b.conv(b.relu(x, "relu6"), "fc7", kernel=(1, 1), num_filter=1024, pad=(0, 0))
    named["relu7"] = b.relu(x, "relu7")
    b.auto("flatten")  # the classifier's Flatten, outside the detection graph
    return named


def _unit(b: _Builder, data: _Node, name: str, width: int, stride: int, match: bool) -> _Node:
    """A pre-activation bottleneck unit (BN-ReLU-conv x3 plus the shortcut)."""
    conv: dict[str, Any] = {"no_bias": True, "workspace": 256}
    act1 = b.relu(b.batchnorm(data, f"{name}_bn1", False), f"{name}_relu1")
    x = b.conv(
        act1,
        f"{name}_conv1",
        kernel=(1, 1),
        num_filter=width // 4,
        pad=(0, 0),
        stride=(1, 1),
        **conv,
    )
    x = b.relu(b.batchnorm(x, f"{name}_bn2", False), f"{name}_relu2")
    x = b.conv(
        x,
        f"{name}_conv2",
        kernel=(3, 3),
        num_filter=width // 4,
        pad=(1, 1),
        stride=(stride, stride),
        **conv,
    )
    x = b.relu(b.batchnorm(x, f"{name}_bn3", False), f"{name}_relu3")
    x = b.conv(
        x, f"{name}_conv3", kernel=(1, 1), num_filter=width, pad=(0, 0), stride=(1, 1), **conv
    )
    short = (
        data
        if match
        else b.conv(
            act1, f"{name}_sc", kernel=(1, 1), num_filter=width, stride=(stride, stride), **conv
        )
    )
    return b.op("elemwise_add", b.auto("_plus"), [x, short])


def _resnet50(b: _Builder, data: _Node) -> dict[str, _Node]:
    """example/ssd's resnet (50 layers, ImageNet stem) up to its last unit; every `_plusN`."""
    x = b.batchnorm(b.op("_copy", "id", [data]), "bn_data", True)
    x = b.conv(
        x,
        "conv0",
        kernel=(7, 7),
        no_bias=True,
        num_filter=64,
        pad=(3, 3),
        stride=(2, 2),
        workspace=256,
    )
    x = b.relu(b.batchnorm(x, "bn0", False), "relu0")
    x = b.op(
        "Pooling", b.auto("pooling"), [x], kernel=(3, 3), pad=(1, 1), pool_type="max", stride=(2, 2)
    )
    named: dict[str, _Node] = {}
    for stage, (units, width) in enumerate(((3, 256), (4, 512), (6, 1024), (3, 2048)), 1):
        for unit in range(1, units + 1):
            stride = 1 if stage == 1 or unit > 1 else 2
            x = _unit(b, x, f"stage{stage}_unit{unit}", width, stride, unit > 1)
            named[x.name] = x
    b.auto("flatten")  # the classifier's Flatten, outside the detection graph
    return named


def _features(b: _Builder, named: dict[str, _Node], p: Preset) -> list[_Node]:
    """example/ssd's `multi_layer_feature`: named layers, then extra 1x1 + 3x3 layers."""
    layers: list[_Node] = []
    for k, (source, filters, stride, pad) in enumerate(
        zip(p.from_layers, p.num_filters, p.strides, p.pads, strict=True)
    ):
        if source:
            layers.append(named[source])
            continue
        base = f"multi_feat_{k}_conv"
        x = b.conv(
            layers[-1],
            f"{base}_1x1_conv",
            kernel=(1, 1),
            num_filter=max(128, filters // 2),
            pad=(0, 0),
            stride=(1, 1),
        )
        x = b.conv(
            b.relu(x, f"{base}_1x1_relu"),
            f"{base}_3x3_conv",
            kernel=(3, 3),
            num_filter=filters,
            pad=(pad, pad),
            stride=(stride, stride),
        )
        layers.append(b.relu(x, f"{base}_3x3_relu"))
    return layers


def _flat(b: _Builder, x: _Node, transpose: int) -> _Node:
    x = b.op("transpose", f"transpose{transpose}", [x], axes=(0, 2, 3, 1))
    return b.op("Flatten", b.auto("flatten"), [x])


def _pred(b: _Builder, x: _Node, name: str, filters: int) -> _Node:
    bias = _Builder.var(f"{name}_bias", __init__='["constant", {"value": 0.0}]', __lr_mult__="2.0")
    return b.conv(x, name, bias, kernel=(3, 3), num_filter=filters, pad=(1, 1), stride=(1, 1))


def _multibox(
    b: _Builder, layers: list[_Node], p: Preset, classes: int
) -> tuple[_Node, _Node, _Node]:
    """example/ssd's `multibox_layer`: per layer its box and class predictors and anchors."""
    locs, clss, anchors = [], [], []
    channels = [f for f in p.num_filters]
    for k, layer in enumerate(layers):
        source = layer.name
        if p.normalizations[k] > 0:
            norm = b.op("L2Normalization", f"{source}_norm", [layer], mode="channel")
            scale = _Builder.var(
                f"{source}_scale", __init__=f'["constant", {{"value": {p.normalizations[k]}}}]',
                __shape__=(1, channels.pop(0), 1, 1), __wd_mult__="0.1",
            )  # fmt: skip
            layer = b.op("broadcast_mul", b.auto("broadcast_mul"), [scale, norm])
        count = len(p.sizes[k]) - 1 + len(p.ratios[k])
        locs.append(_flat(b, _pred(b, layer, f"{source}_loc_pred_conv", count * 4), 2 * k))
        clss.append(
            _flat(b, _pred(b, layer, f"{source}_cls_pred_conv", count * classes), 2 * k + 1)
        )
        step = (p.steps[k], p.steps[k]) if p.steps else (-1.0, -1.0)
        prior = b.op(
            "_contrib_MultiBoxPrior", f"{source}_anchors", [layer], clip=False,
            ratios="(" + ",".join(str(r) for r in p.ratios[k]) + ")",
            sizes="(" + ",".join(str(s) for s in p.sizes[k]) + ")", steps=step,
        )  # fmt: skip
        anchors.append(b.op("Flatten", b.auto("flatten"), [prior]))
    n = len(layers)
    loc = b.op("Concat", "multibox_loc_pred", locs, dim=1, num_args=n)
    cls = b.op("Concat", b.auto("concat"), clss, dim=1, num_args=n)
    cls = b.op("Reshape", b.auto("reshape"), [cls], shape=(0, -1, classes))
    cls = b.op("transpose", "multibox_cls_pred", [cls], axes=(0, 2, 1))
    box = b.op("Concat", b.auto("concat"), anchors, dim=1, num_args=n)
    return loc, cls, b.op("Reshape", "multibox_anchors", [box], shape=(0, -1, 4))


def _serialise(head: _Node) -> dict[str, Any]:
    """MXNet's JSON of the graph ending at `head`: nodes in depth-first post-order (inputs
    in order, then the node), parameter nodes where first reached."""
    order: list[_Node] = []
    index: dict[int, int] = {}
    stack: list[tuple[_Node, int]] = [(head, 0)]
    while stack:
        node, next_input = stack.pop()
        if id(node) in index:
            continue
        if next_input < len(node.inputs):
            stack.append((node, next_input + 1))
            stack.append((node.inputs[next_input][0], 0))
            continue
        index[id(node)] = len(order)
        order.append(node)
    nodes, rows = [], [0]
    for node in order:
        out: dict[str, Any] = {"op": node.op, "name": node.name}
        if node.attrs:
            out["attrs"] = dict(sorted(node.attrs.items()))
        out["inputs"] = [[index[id(n)], 0, version] for n, version in node.inputs]
        nodes.append(out)
        rows.append(rows[-1] + OUTPUTS.get(node.op, 1))
    return {
        "nodes": nodes,
        "arg_nodes": [i for i, n in enumerate(order) if n.op == "null"],
        "node_row_ptr": rows,
        "heads": [[len(order) - 1, 0, 0]],
        "attrs": {"mxnet_version": ["int", MXNET_VERSION]},
    }


def deploy_symbol(
    base_network: str,
    data_shape: int,
    num_classes: int,
    *,
    nms_threshold: float = 0.45,
    nms_topk: int = 400,
    force_suppress: bool = False,
) -> dict[str, Any]:
    """The symbol JSON (as a dict) of example/ssd's inference network for `base_network`
    (`vgg-16`/`resnet-50`) at `data_shape` with `num_classes` object classes: what
    `deploy.py` writes for a SageMaker model trained with those hyperparameters."""
    p = preset(base_network, data_shape)
    b = _Builder()
    data = _Builder.var("data")
    named = (_vgg16_reduced if p.network == "vgg16_reduced" else _resnet50)(b, data)
    loc, cls, anchors = _multibox(b, _features(b, named, p), p, num_classes + 1)
    prob = b.op("softmax", "cls_prob", [cls], axis=1)
    head = b.op(
        "_contrib_MultiBoxDetection", "detection", [prob, loc, anchors],
        force_suppress=force_suppress, nms_threshold=nms_threshold, nms_topk=nms_topk,
        variances=VARIANCES,
    )  # fmt: skip
    return _serialise(head)

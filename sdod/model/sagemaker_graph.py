"""SageMaker Object Detection's `model_algo_1-symbol.json`, read without MXNet.

SageMaker's built-in algorithm is MXNet's `example/ssd`: its symbol is that example's
training graph (or `deploy.py`'s inference graph). This module reads the JSON (nodes with
`op`, `name`, string `attrs` and `inputs`), finds the `_contrib_MultiBoxDetection` node and
walks back from its three inputs: the class predictions (under a `SoftmaxOutput`, `softmax`
or `SoftmaxActivation`), the box predictions and the anchors. Every node on those paths
must be an op listed in `FEATURE_OPS`, `HEAD_OPS` or `_contrib_MultiBoxPrior`, with only the
attributes that op's entry allows; anything else is refused with the node's name and op.
Nodes off those paths (losses, `MultiBoxTarget`) are never built or run. Nothing in the
file is executed: attribute values are parsed as numbers, tuples and booleans only
(`sdod.model.symbol_nodes` reads the nodes and their attributes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Node and the attribute parsers are imported from here too (sdod.model.sagemaker_net)
from sdod.model.symbol_nodes import (
    Node,
    flag,
    floats,
    ints,
    number,
    read_symbol,
    symbol_error,
)

# op -> the attributes it may carry (beyond `__...__` annotations such as `__init__`)
FEATURE_OPS: dict[str, frozenset[str]] = {
    "Convolution": frozenset(
        [
            "kernel",
            "stride",
            "dilate",
            "pad",
            "num_filter",
            "num_group",
            "no_bias",
            "workspace",
            "cudnn_tune",
            "cudnn_off",
            "layout",
        ]
    ),
    "BatchNorm": frozenset(
        ["eps", "momentum", "fix_gamma", "use_global_stats", "axis", "cudnn_off", "output_mean_var"]
    ),
    "Activation": frozenset({"act_type"}),
    "Pooling": frozenset(
        [
            "kernel",
            "stride",
            "pad",
            "pool_type",
            "pooling_convention",
            "global_pool",
            "cudnn_off",
            "layout",
        ]
    ),
    "L2Normalization": frozenset({"mode", "eps"}),
    "broadcast_mul": frozenset(),
    "elemwise_add": frozenset(),
    "_Plus": frozenset(),
    "_plus": frozenset(),
    "broadcast_add": frozenset(),
    "_copy": frozenset(),
    "identity": frozenset(),
}
HEAD_OPS: dict[str, frozenset[str]] = {
    "transpose": frozenset({"axes"}),
    "Flatten": frozenset(),
    "flatten": frozenset(),
    "Concat": frozenset({"dim", "num_args"}),
    "concat": frozenset({"dim", "num_args"}),
    "Reshape": frozenset({"shape", "reverse"}),
    "reshape": frozenset({"shape", "reverse"}),
}
PRIOR_OP = "_contrib_MultiBoxPrior"
PRIOR_ATTRS = frozenset({"sizes", "ratios", "clip", "steps", "offsets"})
DETECTION_OP = "_contrib_MultiBoxDetection"
DETECTION_ATTRS = frozenset(
    [
        "clip",
        "threshold",
        "background_id",
        "nms_threshold",
        "force_suppress",
        "variances",
        "nms_topk",
    ]
)
SOFTMAX_OPS = ("SoftmaxOutput", "softmax", "SoftmaxActivation")
ACTIVATIONS = ("relu", "sigmoid", "tanh", "softrelu")


@dataclass(frozen=True)
class Prior:
    """A `MultiBoxPrior` node's attributes (MXNet's defaults where absent)."""

    sizes: tuple[float, ...]
    ratios: tuple[float, ...]
    steps: tuple[float, float]  # (y, x); <= 0: 1 / feature size
    offsets: tuple[float, float]  # (y, x)
    clip: bool


@dataclass(frozen=True)
class Detection:
    """The `MultiBoxDetection` node's attributes (MXNet's defaults where absent)."""

    threshold: float = 0.01
    clip: bool = True
    variances: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    nms_threshold: float = 0.5
    force_suppress: bool = False
    nms_topk: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "clip": self.clip,
            "variances": list(self.variances),
            "nms_threshold": self.nms_threshold,
            "force_suppress": self.force_suppress,
            "nms_topk": self.nms_topk,
        }


@dataclass(frozen=True)
class Graph:
    """The inference part of a symbol: what to build and run, and where the outputs are."""

    nodes: tuple[Node, ...]
    data: int  # the image input
    cls_pred: int  # (B, K + 1, N) class logits, before the softmax
    loc_pred: int  # (B, 4N) box offsets
    anchors: int  # (1, N, 4) normalised corners
    order: tuple[int, ...]  # op nodes that compute cls_pred and loc_pred, in order
    anchor_order: tuple[int, ...]  # op nodes that compute the anchors, in order
    params: dict[str, str]  # parameter node name -> "arg" or "aux"
    detection: Detection
    where: str

    def node(self, index: int) -> Node:
        return self.nodes[index]


def _allowed(node: Node, allowed: frozenset[str], where: str) -> None:
    unknown = sorted(k for k in node.attrs if not k.startswith("__") and k not in allowed)
    if unknown:
        raise symbol_error(
            where,
            f"{node.what()} has attribute(s) {', '.join(unknown)} that sdod does not "
            "implement; this is not a graph SageMaker's Object Detection algorithm makes",
        )


def _check_values(node: Node, where: str) -> None:
    """Attribute values sdod implements (the op itself is known)."""
    bad = None
    if node.op == "Activation" and node.attrs.get("act_type") not in ACTIVATIONS:
        bad = f"act_type {node.attrs.get('act_type')!r} (supported: {', '.join(ACTIVATIONS)})"
    elif node.op in ("Convolution", "Pooling") and node.attrs.get("layout", "NCHW") not in (
        "NCHW",
        "None",
    ):
        bad = f"layout {node.attrs['layout']!r} (only NCHW)"
    elif node.op == "Convolution" and len(ints(node, "kernel", where, ())) != 2:
        bad = f"kernel {node.attrs.get('kernel')!r} (only 2-D convolutions)"
    elif node.op == "Pooling" and node.attrs.get("pool_type", "max") not in ("max", "avg"):
        bad = f"pool_type {node.attrs['pool_type']!r} (only max and avg)"
    elif node.op == "Pooling" and node.attrs.get("pooling_convention", "valid") not in (
        "valid",
        "full",
    ):
        bad = f"pooling_convention {node.attrs['pooling_convention']!r} (only valid and full)"
    elif node.op == "BatchNorm" and int(number(node, "axis", where, 1)) != 1:
        bad = f"axis {node.attrs['axis']!r} (only 1, channels)"
    elif node.op == "L2Normalization" and node.attrs.get("mode", "instance") not in (
        "instance",
        "channel",
        "spatial",
    ):
        bad = f"mode {node.attrs['mode']!r}"
    elif node.op in ("Reshape", "reshape") and flag(node, "reverse", where, False):
        bad = "reverse=True"
    if bad is not None:
        raise symbol_error(where, f"{node.what()}: sdod does not implement {bad}")


def _walk(
    nodes: tuple[Node, ...], roots: list[int], ops: dict[str, frozenset[str]], where: str
) -> tuple[list[int], list[int]]:
    """Every node the roots depend on, checked against `ops`; (op nodes, null nodes)."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        i = stack.pop()
        if i < 0:
            raise symbol_error(
                where, f"{nodes[-1 - i].what()}: a second output is used for inference"
            )
        if i in seen:
            continue
        seen.add(i)
        node = nodes[i]
        if node.op != "null":
            if node.op not in ops:
                raise symbol_error(
                    where,
                    f"{node.what()} is not an op of SageMaker's Object Detection networks "
                    f"(example/ssd's vgg16_reduced or resnet); sdod implements "
                    f"{', '.join(sorted(ops))}",
                )
            _allowed(node, ops[node.op], where)
            _check_values(node, where)
        stack.extend(node.inputs)
    ordered = sorted(seen)
    return [i for i in ordered if nodes[i].op != "null"], [
        i for i in ordered if nodes[i].op == "null"
    ]


def _detection(node: Node, where: str) -> Detection:
    _allowed(node, DETECTION_ATTRS, where)
    if int(number(node, "background_id", where, 0)) != 0:
        raise symbol_error(where, f"{node.what()}: background_id must be 0 (class 0 is background)")
    variances = floats(node, "variances", where, Detection.variances)
    if len(variances) != 4 or any(v <= 0 for v in variances):
        raise symbol_error(
            where, f"{node.what()}: variances {variances} must be 4 positive numbers"
        )
    return Detection(
        threshold=number(node, "threshold", where, 0.01),
        clip=flag(node, "clip", where, True),
        variances=(variances[0], variances[1], variances[2], variances[3]),
        nms_threshold=number(node, "nms_threshold", where, 0.5),
        force_suppress=flag(node, "force_suppress", where, False),
        nms_topk=int(number(node, "nms_topk", where, -1)),
    )


def prior_of(node: Node, where: str) -> Prior:
    """A `MultiBoxPrior` node's attributes, checked."""
    _allowed(node, PRIOR_ATTRS, where)
    sizes = floats(node, "sizes", where, (1.0,))
    ratios = floats(node, "ratios", where, (1.0,))
    steps = floats(node, "steps", where, (-1.0, -1.0))
    offsets = floats(node, "offsets", where, (0.5, 0.5))
    if not sizes or not ratios or any(v <= 0 for v in sizes + ratios):
        raise symbol_error(where, f"{node.what()}: sizes and ratios must be positive numbers")
    if len(steps) != 2 or len(offsets) != 2 or not all(0 <= o <= 1 for o in offsets):
        raise symbol_error(where, f"{node.what()}: steps and offsets must be (y, x) pairs")
    return Prior(
        sizes,
        ratios,
        (steps[0], steps[1]),
        (offsets[0], offsets[1]),
        flag(node, "clip", where, False),
    )


def _class_input(nodes: tuple[Node, ...], index: int, where: str) -> int:
    """The class logits under the detection node's probability input."""
    node = nodes[index]
    if node.op not in SOFTMAX_OPS:
        raise symbol_error(
            where,
            f"{node.what()} feeds {DETECTION_OP}'s class probabilities; expected one of "
            f"{', '.join(SOFTMAX_OPS)} over the class axis",
        )
    if node.op == "softmax" and int(number(node, "axis", where, -1)) != 1:
        raise symbol_error(where, f"{node.what()}: the softmax must be over axis 1 (classes)")
    if node.op == "SoftmaxActivation" and node.attrs.get("mode") != "channel":
        raise symbol_error(where, f"{node.what()}: the softmax must be mode=channel")
    if node.op == "SoftmaxOutput" and not flag(node, "multi_output", where, False):
        raise symbol_error(where, f"{node.what()}: SoftmaxOutput must have multi_output=True")
    return node.inputs[0]


def _params(nodes: tuple[Node, ...], order: list[int]) -> dict[str, str]:
    """Parameter nodes by name: every null input but an op's first (its data), and either
    input of `broadcast_mul` (the L2Normalization scale); BatchNorm's 4th and 5th inputs
    (moving mean and variance) are auxiliary states."""
    out: dict[str, str] = {}
    for i in order:
        node = nodes[i]
        for k, j in enumerate(node.inputs):
            if nodes[j].op == "null" and (k > 0 or node.op == "broadcast_mul"):
                out[nodes[j].name] = "aux" if node.op == "BatchNorm" and k >= 3 else "arg"
    return out


def read_graph(data: bytes, where: str) -> Graph:
    """The inference graph of a SageMaker (example/ssd) symbol JSON; UserError naming the
    node for anything sdod cannot build."""
    nodes = read_symbol(data, where)
    found = [n for n in nodes if n.op == DETECTION_OP]
    if len(found) != 1:
        raise symbol_error(
            where,
            f"{len(found)} {DETECTION_OP} nodes; a SageMaker Object Detection symbol has one "
            "(is this an image-classification or another model's symbol?)",
        )
    det = found[0]
    if len(det.inputs) != 3:
        raise symbol_error(where, f"{det.what()} has {len(det.inputs)} inputs, expected 3")
    detection = _detection(det, where)
    cls_pred = _class_input(nodes, det.inputs[0], where)
    loc_pred, anchors = det.inputs[1], det.inputs[2]
    order, nulls = _walk(nodes, [cls_pred, loc_pred], {**FEATURE_OPS, **HEAD_OPS}, where)
    anchor_ops = {**FEATURE_OPS, **HEAD_OPS, PRIOR_OP: PRIOR_ATTRS}
    anchor_order, _ = _walk(nodes, [anchors], anchor_ops, where)
    for i in anchor_order:
        if nodes[i].op == PRIOR_OP:
            prior_of(nodes[i], where)
    anchor_order = [i for i in anchor_order if nodes[i].op in (PRIOR_OP, *HEAD_OPS)]
    params = _params(nodes, order)
    inputs = [i for i in nulls if nodes[i].name not in params]
    if len(inputs) != 1:
        raise symbol_error(
            where,
            f"the network takes {len(inputs)} inputs ({', '.join(nodes[i].name for i in inputs)}); "
            "expected one image input ('data')",
        )
    return Graph(
        nodes,
        inputs[0],
        cls_pred,
        loc_pred,
        anchors,
        tuple(order),
        tuple(anchor_order),
        params,
        detection,
        where,
    )


def family(graph: Graph) -> str:
    """`resnet-50` (example/ssd's resnet: a BatchNorm `bn_data` on the input) or `vgg-16`
    (vgg16_reduced: convolutions from `conv1_1`, an L2Normalization on relu4_3)."""
    ops = [graph.node(i) for i in graph.order]
    first = ops[0]
    if any(n.op == "BatchNorm" and n.name == "bn_data" for n in ops):
        return "resnet-50"
    if first.op == "Convolution" and any(n.op == "L2Normalization" for n in ops):
        return "vgg-16"
    raise symbol_error(
        graph.where,
        f"the base network starts with {first.what()}: neither example/ssd's vgg16_reduced "
        "(conv1_1 ... fc7 with an L2Normalization) nor its resnet (bn_data), the two "
        "networks SageMaker's Object Detection algorithm trains",
    )


def step_check(prior: Prior, height: int, width: int) -> str | None:
    """Why explicit steps disagree with a feature map of `height` x `width` (None: they fit):
    the cells must cover the image to within one cell."""
    for step, cells in ((prior.steps[0], height), (prior.steps[1], width)):
        if step > 0 and abs(step * cells - 1.0) >= step + 1e-6:
            return f"{cells} cells of step {step:.6g} cover {step * cells:.3g} of the image"
    return None


def sanitize(name: str) -> str:
    """A node name as a torch module key (no dots)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "_"

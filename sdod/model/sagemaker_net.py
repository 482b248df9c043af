"""The graph of a SageMaker symbol as torch layers, and an interpreter that runs it.

`GraphNet` makes one torch layer per `Convolution` and `BatchNorm` node (named after the
node), one parameter per L2Normalization scale, and runs the graph's ops in the file's
(topological) order, each as MXNet defines it: BatchNorm's `fix_gamma` (the stored gamma is
ignored and 1 is used), `eps` default 1e-3, Pooling's `full` convention (ceil), Reshape's
0/-1 codes, L2Normalization's modes. Each parameter node of the graph is bound to one torch
tensor (`targets`), so an MXNet `.params` file loads by the graph's own names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sdod.errors import UserError
from sdod.model.sagemaker_graph import (
    HEAD_OPS,
    PRIOR_OP,
    Graph,
    Node,
    flag,
    ints,
    number,
    prior_of,
    sanitize,
)

ADD_OPS = ("elemwise_add", "_Plus", "_plus", "broadcast_add")


def _pair(values: tuple[int, ...], default: tuple[int, int]) -> tuple[int, int]:
    if not values:
        return default
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


class GraphNet(nn.Module):
    """The inference part of a SageMaker graph as torch layers (see the module docstring)."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph
        self.layers = nn.ModuleDict()
        self.scales = nn.ParameterDict()
        self.targets: dict[str, tuple[str, str]] = {}  # param node -> (layer key, tensor)
        self.fixed_gamma: set[str] = set()
        channels: dict[int, int | None] = {graph.data: 3}
        for i in graph.order:
            node = graph.node(i)
            channels[i] = self._build(node, [channels.get(j) for j in node.inputs])

    def _fail(self, node: Node, text: str) -> UserError:
        return UserError(f"{self.graph.where}: {node.what()}: {text}")

    def _bind(self, node: Node, index: int, key: str, tensor: str) -> None:
        if index < len(node.inputs):
            self.targets[self.graph.node(node.inputs[index]).name] = (key, tensor)

    def _build(self, node: Node, cins: list[int | None]) -> int | None:
        """Make the node's layer; its output channels (None past the heads)."""
        where, key = self.graph.where, sanitize(node.name)
        if node.op == "Convolution":
            return self._conv(node, cins[0], key)
        if node.op == "BatchNorm":
            if cins[0] is None or len(node.inputs) != 5:
                raise self._fail(node, "expected a feature map and gamma, beta, mean, var")
            momentum = number(node, "momentum", where, 0.9)
            self.layers[key] = nn.BatchNorm2d(
                cins[0], eps=number(node, "eps", where, 1e-3), momentum=1.0 - momentum
            )
            for k, tensor in enumerate(("weight", "bias", "running_mean", "running_var")):
                self._bind(node, k + 1, key, tensor)
            if flag(node, "fix_gamma", where, True):  # MXNet uses 1 whatever is stored
                self.fixed_gamma.add(key)
                self.layers[key].weight.requires_grad_(False)
            return cins[0]
        if node.op == "broadcast_mul":
            return self._scale(node, cins)
        if node.op in ADD_OPS:
            if cins[0] != cins[1]:
                raise self._fail(node, f"adds {cins[0]} channels to {cins[1]}")
            return cins[0]
        if node.op in HEAD_OPS or node.op == PRIOR_OP:
            return None
        return cins[0]  # Activation, Pooling, L2Normalization, _copy: channels unchanged

    def _conv(self, node: Node, cin: int | None, key: str) -> int:
        where = self.graph.where
        if cin is None:
            raise self._fail(node, "its input is not a feature map")
        groups = int(number(node, "num_group", where, 1))
        bias = not flag(node, "no_bias", where, False)
        if len(node.inputs) != 2 + bias:
            raise self._fail(node, f"{len(node.inputs)} inputs but no_bias={not bias}")
        if cin % groups:
            raise self._fail(node, f"{cin} input channels in {groups} groups")
        cout = int(number(node, "num_filter", where, 0))
        self.layers[key] = nn.Conv2d(
            cin,
            cout,
            _pair(ints(node, "kernel", where, ()), (1, 1)),
            stride=_pair(ints(node, "stride", where, ()), (1, 1)),
            padding=_pair(ints(node, "pad", where, ()), (0, 0)),
            dilation=_pair(ints(node, "dilate", where, ()), (1, 1)),
            groups=groups,
            bias=bias,
        )
        self._bind(node, 1, key, "weight")
        if bias:
            self._bind(node, 2, key, "bias")
        return cout

    def _scale(self, node: Node, cins: list[int | None]) -> int | None:
        """`broadcast_mul` of a feature map by a parameter node (the L2Normalization scale)."""
        for k, j in enumerate(node.inputs):
            source = self.graph.node(j)
            if source.op != "null":
                continue
            other = cins[1 - k]
            shape = ints(source, "__shape__", self.graph.where, (1, other or 1, 1, 1))
            key = sanitize(source.name)
            self.scales[key] = nn.Parameter(torch.ones(shape))
            self.targets[source.name] = (key, "")
            return other
        return cins[0]

    def tensor(self, param: str) -> torch.Tensor:
        """The torch tensor a graph parameter node is bound to."""
        key, name = self.targets[param]
        if not name:
            return self.scales[key]
        value: torch.Tensor = getattr(self.layers[key], name)
        return value

    def layer_names(self) -> dict[str, list[nn.Parameter]]:
        """MXNet layer (node) name -> its trainable tensors."""
        out: dict[str, list[nn.Parameter]] = {}
        for i in self.graph.order:
            key = sanitize(self.graph.node(i).name)
            if key in self.layers:
                out[self.graph.node(i).name] = list(self.layers[key].parameters())
        for param, (key, name) in self.targets.items():
            if not name:
                out[param] = [self.scales[key]]
        return out

    def _run_node(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        where, x = self.graph.where, args[0]
        op = node.op
        if op in ("Convolution", "BatchNorm"):
            layer = self.layers[sanitize(node.name)]
            if op == "BatchNorm" and sanitize(node.name) in self.fixed_gamma:
                assert isinstance(layer, nn.BatchNorm2d | nn.SyncBatchNorm)  # SyncBatchNorm: DDP
                return F.batch_norm(
                    x,
                    layer.running_mean,
                    layer.running_var,
                    torch.ones_like(layer.bias),
                    layer.bias,
                    self.training,
                    layer.momentum or 0.0,
                    layer.eps,
                )
            out: torch.Tensor = layer(x)
            return out
        if op == "Activation":
            act = node.attrs["act_type"]
            fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
                "relu": F.relu,
                "sigmoid": torch.sigmoid,
                "tanh": torch.tanh,
                "softrelu": F.softplus,
            }
            return fns[act](x)
        if op == "Pooling":
            return _pool(node, x, where)
        if op == "L2Normalization":
            dims = {"channel": (1,), "spatial": (2, 3)}.get(node.attrs.get("mode", ""), (1, 2, 3))
            eps = number(node, "eps", where, 1e-10)
            return x / torch.sqrt(torch.sum(x * x, dim=dims, keepdim=True) + eps)
        if op == "broadcast_mul":
            return args[0] * args[1]
        if op in ADD_OPS:
            return args[0] + args[1]
        return _head(node, args, where)

    def evaluate(
        self, values: dict[int, torch.Tensor], order: Iterable[int], keep: Iterable[int] = ()
    ) -> dict[int, torch.Tensor]:
        """Run the op nodes `order` on `values` (node -> tensor, the inputs filled in). A
        value is dropped after its last use unless it is in `keep`."""
        graph, keep = self.graph, set(keep)
        order = list(order)
        last = {j: i for i in order for j in graph.node(i).inputs}
        for param, (key, name) in self.targets.items():
            if not name:
                values[next(n.index for n in graph.nodes if n.name == param)] = self.scales[key]
        for i in order:
            node = graph.node(i)
            used = node.inputs[:1] if node.op in ("Convolution", "BatchNorm") else node.inputs
            values[i] = self._run_node(node, [values[j] for j in used])
            for j in node.inputs:
                if last.get(j) == i and j not in keep and graph.node(j).op != "null":
                    values.pop(j, None)
        return values


def _pool(node: Node, x: torch.Tensor, where: str) -> torch.Tensor:
    if flag(node, "global_pool", where, False):
        if node.attrs.get("pool_type", "max") == "max":
            return torch.amax(x, dim=(2, 3), keepdim=True)
        return torch.mean(x, dim=(2, 3), keepdim=True)
    kernel = _pair(ints(node, "kernel", where, ()), (1, 1))
    stride = _pair(ints(node, "stride", where, ()), (1, 1))
    pad = _pair(ints(node, "pad", where, ()), (0, 0))
    ceil = node.attrs.get("pooling_convention", "valid") == "full"
    if node.attrs.get("pool_type", "max") == "max":
        return F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil)
    return F.avg_pool2d(x, kernel, stride, pad, ceil_mode=ceil, count_include_pad=True)


def _reshape(node: Node, x: torch.Tensor, where: str) -> torch.Tensor:
    """MXNet's Reshape with its 0 (copy this dimension) and -1 (infer) codes."""
    spec = ints(node, "shape", where, ())
    if any(v < -1 for v in spec):
        raise UserError(f"{where}: {node.what()}: reshape codes below -1 are not supported")
    shape = [x.shape[k] if v == 0 else v for k, v in enumerate(spec)]
    return x.reshape(shape)


def _head(node: Node, args: list[torch.Tensor], where: str) -> torch.Tensor:
    op, x = node.op, args[0]
    if op == "transpose":
        axes = ints(node, "axes", where, ())
        return x.permute(axes or tuple(range(x.dim() - 1, -1, -1)))
    if op in ("Flatten", "flatten"):
        return x.reshape(x.shape[0], -1)
    if op in ("Concat", "concat"):
        return torch.cat(args, dim=int(number(node, "dim", where, 1)))
    if op in ("Reshape", "reshape"):
        return _reshape(node, x, where)
    if op in ("_copy", "identity"):
        return x
    raise UserError(f"{where}: {node.what()} cannot be run")  # read_graph lets none through


def prior_boxes(node: Node, height: int, width: int, where: str) -> np.ndarray:
    """`(1, height * width * A, 4)` float32 corners, as MXNet's MultiBoxPrior makes them
    (float32 arithmetic in MXNet's order; not clipped unless the node says so)."""
    prior = prior_of(node, where)
    f32 = np.float32
    step_y, step_x = (f32(s) for s in prior.steps)
    if step_y <= 0 or step_x <= 0:
        step_y, step_x = f32(1.0) / f32(height), f32(1.0) / f32(width)
    off_y, off_x = (f32(o) for o in prior.offsets)
    shapes = [(f32(s), np.sqrt(f32(prior.ratios[0]))) for s in prior.sizes]
    shapes += [(f32(prior.sizes[0]), np.sqrt(f32(r))) for r in prior.ratios[1:]]
    half = np.array(
        [[s * f32(height) / f32(width) * r / f32(2), s / r / f32(2)] for s, r in shapes], f32
    )  # [A, 2] (w/2, h/2)
    cy = (np.arange(height, dtype=f32) + off_y) * step_y
    cx = (np.arange(width, dtype=f32) + off_x) * step_x
    centre = np.stack(np.meshgrid(cx, cy, indexing="xy"), axis=-1).reshape(-1, 1, 2)  # [HW,1,2]
    boxes = np.concatenate([centre - half, centre + half], axis=-1).astype(f32)
    if prior.clip:
        boxes = np.clip(boxes, f32(0), f32(1))
    return boxes.reshape(1, -1, 4)


def anchor_corners(net: GraphNet, shapes: dict[int, tuple[int, ...]]) -> torch.Tensor:
    """`(N, 4)` normalised corners: each MultiBoxPrior on its feature map's shape, then the
    graph's own Flatten/Concat/Reshape nodes."""
    graph = net.graph
    values: dict[int, torch.Tensor] = {}
    for i in graph.anchor_order:
        node = graph.node(i)
        if node.op == PRIOR_OP:
            shape = shapes[node.inputs[0]]
            values[i] = torch.from_numpy(prior_boxes(node, shape[2], shape[3], graph.where))
    rest = [i for i in graph.anchor_order if graph.node(i).op != PRIOR_OP]
    out = net.evaluate(values, rest, keep=[graph.anchors])[graph.anchors]
    return out.reshape(-1, 4)


def node_shapes(graph: Graph, image_size: int) -> dict[int, tuple[int, ...]]:
    """Every inference node's output shape for one `image_size` square image (computed on
    the meta device: no memory, no arithmetic)."""
    with torch.device("meta"):
        probe = GraphNet(graph)
        values = probe.evaluate(
            {graph.data: torch.empty(1, 3, image_size, image_size)},
            graph.order,
            keep=[i for i in graph.order],
        )
    return {i: tuple(int(d) for d in v.shape) for i, v in values.items()}

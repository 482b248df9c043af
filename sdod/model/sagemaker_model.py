"""The `sagemaker` network family: SageMaker's Object Detection networks, built from the
graph of their own symbol JSON (`sdod/model/sagemaker_graph.py`).

`SageMakerSSD` has sdod's SSD interface (`forward(images) -> (cls_logits [B, N, K + 1],
box_offsets [B, N, 4])`, `anchors [N, 4]` as `(cx, cy, w, h)` input pixels, `layer_names`,
`freeze`), so training, evaluation and ONNX export take it as they take the other families,
and it brings SageMaker's inference: `resize` (OpenCV's INTER_LINEAR, exactly), inputs
minus the mean pixels (123, 117, 104) with no std, softmax and `detect` (MXNet's
MultiBoxDetection with the graph's attributes; `sdod/model/sagemaker_detect.py`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from sdod.errors import UserError
from sdod.model.boxes import STDS
from sdod.model.postprocess import ImageDetections
from sdod.model.sagemaker_detect import detections, multibox_detection
from sdod.model.sagemaker_graph import PRIOR_OP, Graph, family, prior_of, read_graph, step_check
from sdod.model.sagemaker_net import GraphNet, anchor_corners, node_shapes
from sdod.model.sagemaker_resize import resize_linear

MEAN_RGB = (123.0, 117.0, 104.0)  # example/ssd's demo.py / train.py / evaluate.py defaults


@dataclass(frozen=True)
class SageMakerConfig:
    """What the rest of sdod reads from a network's `config`."""

    base_network: str
    num_classes: int
    image_size: int
    variant: str = "sagemaker"


class SageMakerSSD(nn.Module):
    anchors: torch.Tensor
    corners: torch.Tensor
    mean: torch.Tensor
    loc_scale: torch.Tensor

    def __init__(self, graph: Graph, image_size: int, mean: tuple[float, ...] = MEAN_RGB) -> None:
        super().__init__()
        shapes = node_shapes(graph, image_size)
        self.graph = graph
        self.net = GraphNet(graph)
        corners = anchor_corners(self.net, shapes)
        cls_shape, loc_shape = shapes[graph.cls_pred], shapes[graph.loc_pred]
        n = corners.shape[0]
        if len(cls_shape) != 3 or cls_shape[2] != n or loc_shape != (1, 4 * n):
            raise UserError(
                f"{graph.where}: the class predictions are {cls_shape}, the box predictions "
                f"{loc_shape} and the anchors ({n}, 4): they must be (1, K + 1, N), (1, 4N) and "
                "(N, 4) for one N"
            )
        self.config = SageMakerConfig(family(graph), cls_shape[1] - 1, image_size)
        self.network: dict[str, Any] | None = None  # model_config.json's, once known
        self.priors = _priors(graph, shapes, image_size)
        variances = graph.detection.variances
        self.detection = replace(graph.detection, variances=STDS)  # offsets are sdod's
        scale = torch.tensor([v / s for v, s in zip(variances, STDS, strict=True)])
        self.register_buffer("loc_scale", scale, persistent=False)
        self.rescale = tuple(variances) != tuple(STDS)
        self.register_buffer("corners", corners, persistent=False)
        centre, size = (corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]
        self.register_buffer("anchors", torch.cat([centre, size], 1) * image_size, persistent=False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) RGB `[B, 3, S, S]` -> the network's input (no std)."""
        return images.float() - self.mean

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype == torch.uint8:
            images = self.normalize(images)
        graph = self.graph
        values = self.net.evaluate(
            {graph.data: images}, graph.order, keep=(graph.cls_pred, graph.loc_pred)
        )
        cls, loc = values[graph.cls_pred], values[graph.loc_pred]
        box = loc.reshape(loc.shape[0], -1, 4)
        if self.rescale:  # variances other than sdod's (0.1, 0.1, 0.2, 0.2)
            box = box * self.loc_scale
        return cls.transpose(1, 2), box

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 `[3, H, W]` -> `[3, S, S]`, as example/ssd (cv2 INTER_LINEAR, aspect not kept)."""
        size = self.config.image_size
        hwc = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
        return torch.from_numpy(resize_linear(hwc, size, size)).permute(2, 0, 1).contiguous()

    @torch.no_grad()
    def raw_detections(self, cls_logits: torch.Tensor, box_offsets: torch.Tensor) -> np.ndarray:
        """MultiBoxDetection's raw `[B, N, 6]` output for network outputs."""
        prob = torch.softmax(cls_logits.float(), dim=-1).transpose(1, 2).cpu().numpy()
        loc = box_offsets.float().cpu().numpy()
        anchors = self.corners.cpu().numpy()
        return np.stack(
            [
                multibox_detection(p, b, anchors, self.detection)
                for p, b in zip(prob, loc, strict=True)
            ]
        )

    def detect(self, cls_logits: torch.Tensor, box_offsets: torch.Tensor) -> list[ImageDetections]:
        """Per image: the detections SageMaker's endpoint returns, boxes in input pixels."""
        out = []
        for raw in self.raw_detections(cls_logits, box_offsets):
            rows = torch.from_numpy(detections(raw)).to(cls_logits.device)
            size = float(self.config.image_size)
            out.append(ImageDetections(rows[:, 2:] * size, rows[:, 1], rows[:, 0].long()))
        return out

    def layer_names(self) -> dict[str, list[nn.Parameter]]:
        """MXNet layer (node) name -> its parameters, for `freeze_layer_pattern`."""
        return self.net.layer_names()

    def freeze(self, pattern: str) -> list[str]:
        """Stop gradients for layers whose name matches `pattern` (re.search); return them."""
        regex = re.compile(pattern)
        names = self.layer_names()
        frozen = sorted(name for name in names if regex.search(name))
        if not frozen:
            raise ValueError(
                f"freeze_layer_pattern {pattern!r} matches no layer of this SageMaker "
                f"{self.config.base_network} graph"
            )
        for name in frozen:
            for param in names[name]:
                param.requires_grad_(False)
        return frozen

    def load_mxnet(self, arrays: Mapping[str, np.ndarray], where: str) -> None:
        """Set every parameter from an MXNet `.params` mapping (`arg:`/`aux:` names)."""
        load_params(self.net, arrays, where)


def _priors(graph: Graph, shapes: dict[int, tuple[int, ...]], size: int) -> list[dict[str, Any]]:
    """Each MultiBoxPrior's layer, feature size and attributes; explicit steps checked."""
    out = []
    for i in graph.anchor_order:
        node = graph.node(i)
        if node.op != PRIOR_OP:
            continue
        prior = prior_of(node, graph.where)
        _, _, h, w = shapes[node.inputs[0]]
        problem = step_check(prior, h, w)
        if problem:
            raise UserError(
                f"{graph.where}: {node.what()}: at image_shape {size} its feature map is "
                f"{h}x{w}, and {problem}: the graph was made for another image_shape"
            )
        out.append(
            {
                "node": node.name,
                "source": graph.node(node.inputs[0]).name,
                "feature": [h, w],
                "sizes": list(prior.sizes),
                "ratios": list(prior.ratios),
                "steps": list(prior.steps),
                "offsets": list(prior.offsets),
                "clip": prior.clip,
                "per_cell": len(prior.sizes) + len(prior.ratios) - 1,
            }
        )
    return out


def load_params(net: GraphNet, arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Copy `.params` arrays onto the graph's tensors, each found by its node's name."""
    graph = net.graph
    wanted = {f"{kind}:{name}": name for name, kind in graph.params.items()}
    bare = {k.split(":", 1)[-1]: k for k in arrays}
    missing = [k for k, name in wanted.items() if k not in arrays and name not in bare]
    unknown = [k for k in arrays if k not in wanted and k.split(":", 1)[-1] not in graph.params]
    if missing and (unknown or len(missing) == len(wanted)):
        raise UserError(
            f"{where}: this .params file was saved for another symbol: {len(missing)} of the "
            f"{len(wanted)} parameters the graph names are missing (e.g. {missing[0]!r}) and "
            f"{len(unknown)} of its arrays are not in the graph"
            + (f" (e.g. {unknown[0]!r})" if unknown else "")
            + "; take the .params and -symbol.json of the same model.tar.gz"
        )
    if missing:
        raise UserError(
            f"{where}: parameter {missing[0]!r} of the graph is missing ({len(missing)} missing "
            "in all): the .params file is incomplete or damaged"
        )
    with torch.no_grad():
        for key, name in wanted.items():
            value = arrays[key] if key in arrays else arrays[bare[name]]
            target = net.tensor(name)
            if tuple(value.shape) != tuple(target.shape):
                raise UserError(
                    f"{where}: parameter {key!r} has shape {tuple(value.shape)}, but the graph's "
                    f"layer {net.targets[name][0]!r} needs {tuple(target.shape)}: the .params "
                    "file does not fit this symbol"
                )
            target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
    for key in net.fixed_gamma:  # fix_gamma: MXNet uses 1, whatever was stored
        layer = net.layers[key]
        assert isinstance(layer, nn.BatchNorm2d)
        with torch.no_grad():
            layer.weight.fill_(1.0)


def build(symbol: bytes, image_size: int, where: str) -> SageMakerSSD:
    """The network a symbol JSON describes, for `image_size` square inputs (untrained)."""
    return SageMakerSSD(read_graph(symbol, where), image_size)

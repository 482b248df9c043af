"""The SSD network: a base network, one 3x3 class and box predictor per feature map, anchors.

`forward(images)` takes a float batch `[B, 3, S, S]` (normalised RGB) and returns
`cls_logits [B, A, num_classes + 1]` (index 0 is background) and `box_offsets [B, A, 4]`
(normalised offsets, see `boxes.encode`), in anchor order (map, row, column, anchor).
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass

import torch
from torch import nn

from sdod.model.anchors import generate_anchors, preset_for
from sdod.model.backbones import BACKBONES, Backbone

VARIANTS = ("", "gluoncv")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SSDConfig:
    base_network: str
    num_classes: int
    image_size: int
    variant: str = ""  # "gluoncv": the layout GluonCV's weights fit (see backbones)

    def to_dict(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=16)
def feature_sizes(base_network: str, image_size: int) -> tuple[tuple[int, int], ...]:
    """Feature-map sizes, from a forward pass on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        backbone = BACKBONES[base_network](image_size).eval()
        maps = backbone(torch.empty(1, 3, image_size, image_size))
    return tuple((int(m.shape[2]), int(m.shape[3])) for m in maps)


def anchors_for(config: SSDConfig) -> torch.Tensor:
    """`[A, 4]` anchors `(cx, cy, w, h)` in input pixels for this network and size."""
    preset = preset_for(config.base_network, config.image_size)
    return generate_anchors(preset, feature_sizes(config.base_network, config.image_size))


class SSD(nn.Module):
    anchors: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, config: SSDConfig, backbone_weights: dict[str, torch.Tensor] | None = None
    ) -> None:
        super().__init__()
        if config.base_network not in BACKBONES:
            raise ValueError(
                f"base_network must be one of {sorted(BACKBONES)}, got {config.base_network!r}"
            )
        if config.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {config.variant!r}")
        self.config = config
        self.backbone: Backbone = BACKBONES[config.base_network](
            config.image_size, backbone_weights, variant=config.variant
        )
        per_cell = preset_for(config.base_network, config.image_size).num_anchors()
        k = config.num_classes + 1
        self.class_heads = nn.ModuleList(
            nn.Conv2d(c, a * k, 3, padding=1)
            for c, a in zip(self.backbone.out_channels, per_cell, strict=True)
        )
        self.box_heads = nn.ModuleList(
            nn.Conv2d(c, a * 4, 3, padding=1)
            for c, a in zip(self.backbone.out_channels, per_cell, strict=True)
        )
        self.register_buffer("anchors", anchors_for(config), persistent=False)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255, persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) RGB `[B, 3, S, S]` -> the network's input."""
        return (images.float() - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype == torch.uint8:
            images = self.normalize(images)
        maps = self.backbone(images)
        k = self.config.num_classes + 1
        cls = [
            h(m).permute(0, 2, 3, 1).reshape(m.shape[0], -1, k)
            for h, m in zip(self.class_heads, maps, strict=True)
        ]
        box = [
            h(m).permute(0, 2, 3, 1).reshape(m.shape[0], -1, 4)
            for h, m in zip(self.box_heads, maps, strict=True)
        ]
        return torch.cat(cls, dim=1), torch.cat(box, dim=1)

    def layer_names(self) -> dict[str, list[nn.Parameter]]:
        """MXNet-style layer name -> its parameters (base network layers and the heads)."""
        names = {f"backbone.{path}": name for path, name in self.backbone.name_map().items()}
        out: dict[str, list[nn.Parameter]] = {}
        for path, param in self.named_parameters():
            owner = path.rsplit(".", 1)[0] if path not in names else path
            name = names.get(owner) or names.get(path)
            if name is None and path.startswith(("class_heads.", "box_heads.")):
                kind, index = path.split(".")[:2]
                name = f"{kind[:-1]}{index}"
            if name is not None:
                out.setdefault(name, []).append(param)
        return out

    def freeze(self, pattern: str) -> list[str]:
        """Stop gradients for layers whose name matches `pattern` (re.search); return them."""
        regex = re.compile(pattern)
        frozen = sorted(name for name in self.layer_names() if regex.search(name))
        if not frozen:
            raise ValueError(
                f"freeze_layer_pattern {pattern!r} matches no layer of {self.config.base_network}; "
                f"list them with `sdod layers --base-network {self.config.base_network}`"
            )
        for name in frozen:
            for param in self.layer_names()[name]:
                param.requires_grad_(False)
        return frozen


def layer_names(base_network: str, image_shape: int = 300, pattern: str | None = None) -> list[str]:
    """The MXNet-style layer names of a network (what `freeze_layer_pattern` matches), only
    those `pattern` matches when given; built on the meta device (no memory, no compute)."""
    from sdod.errors import UserError
    from sdod.model.sagemaker_symbol import NETWORKS

    if base_network in NETWORKS:  # SageMaker's graph (sdod/model/sagemaker_layout.py)
        from sdod.model.sagemaker_layout import build_layout

        names = list(build_layout(base_network, 1, image_shape).layer_names())
    else:
        with torch.device("meta"):
            names = list(SSD(SSDConfig(base_network, 1, image_shape)).layer_names())
    if pattern is None:
        return names
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise UserError(
            f"--pattern {pattern!r} is not a valid regular expression ({exc})"
        ) from None
    matched = [n for n in names if regex.search(n)]
    if not matched:
        raise UserError(f"freeze_layer_pattern {pattern!r} matches no layer of {base_network}")
    return matched

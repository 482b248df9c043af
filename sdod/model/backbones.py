"""Base networks: each returns a list of feature maps, largest first.

- `vgg-16`: atrous VGG-16 (pool5 3x3/1, fc6 as a 3x3 conv with dilation 6, fc7 1x1), L2Norm
  with a learned scale (init 20) on conv4_3, extra layers as in the paper / GluonCV's
  `ssd_*_vgg16_atrous` (torchvision's `SSDFeatureExtractorVGG`).
- `resnet-50`: GluonCV's `ssd_512_resnet50_v1` layout: stage3 (stride 16) and stage4
  (stride 32) of ResNet-50, then four expander blocks (1x1 transition to f, 3x3/2 conv to
  f, each with BatchNorm and ReLU) with f = 512, 512, 256, 256. The ResNet is
  torchvision's (its ImageNet weights fit); `variant="gluoncv"` turns it into GluonCV's
  `resnet50_v1` (stride and a bias on the bottlenecks' 1x1 convolutions), which GluonCV's
  weights fit (`sdod/model/gluoncv.py`; `tests/unit/sdod/model/test_gluoncv.py` proves the
  outputs equal GluonCV's).
- `mobilenet-v3` (sdod extension): MobileNetV3-Small with the same six-map layout and
  lighter expanders, so that CPU users and the demo can train in minutes.

`Backbone.name_map()` (through `SSD.layer_names()`) maps MXNet-style names (`conv1_1`,
`fc7`, `stage3_unit2_conv1`, ...) to parameters, for `freeze_layer_pattern`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn
from torchvision.models import mobilenet_v3_small, resnet50, vgg16
from torchvision.models.detection.ssd import SSDFeatureExtractorVGG
from torchvision.models.resnet import Bottleneck, ResNet


def _expander(cin: int, cout: int, trans: int, eps: float = 1e-5) -> nn.Sequential:
    """GluonCV's `FeatureExpander` block: a 1x1 transition to `trans` channels, then a 3x3/2
    convolution to `cout`, each with BatchNorm (no conv bias) and ReLU. (GluonCV builds it
    with MXNet's symbolic BatchNorm: eps 1e-3 and gamma fixed at 1.)"""
    return nn.Sequential(
        nn.Conv2d(cin, trans, 1, bias=False),
        nn.BatchNorm2d(trans, eps=eps),
        nn.ReLU(inplace=True),
        nn.Conv2d(trans, cout, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout, eps=eps),
        nn.ReLU(inplace=True),
    )


GLUONCV_EXPANDER_EPS = 1e-3  # mx.sym.BatchNorm's default


class Backbone(nn.Module):
    """Common interface: `forward(x) -> list of feature maps`, `out_channels`, `name_map()`."""

    out_channels: list[int]

    def name_map(self) -> dict[str, str]:
        """torch parameter-module path -> MXNet-style layer name."""
        raise NotImplementedError


# GluonCV's `vgg16_atrous` extras: (filters, kernel, stride, padding) pairs per block.
VGG_EXTRAS_300 = [
    ((256, 1, 1, 0), (512, 3, 2, 1)),
    ((128, 1, 1, 0), (256, 3, 2, 1)),
    ((128, 1, 1, 0), (256, 3, 1, 0)),
    ((128, 1, 1, 0), (256, 3, 1, 0)),
]
VGG_EXTRAS_512 = [
    ((256, 1, 1, 0), (512, 3, 2, 1)),
    ((128, 1, 1, 0), (256, 3, 2, 1)),
    ((128, 1, 1, 0), (256, 3, 2, 1)),
    ((128, 1, 1, 0), (256, 3, 2, 1)),
    ((128, 1, 1, 0), (256, 4, 1, 1)),
]


def _vgg_extra(cin: int, spec: tuple[tuple[int, int, int, int], ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for f, k, st, p in spec:
        layers += [nn.Conv2d(cin, f, k, stride=st, padding=p), nn.ReLU(inplace=True)]
        cin = f
    return nn.Sequential(*layers)


M = TypeVar("M", bound=nn.Module)
Weights = dict[str, torch.Tensor] | None  # a torchvision ImageNet state dict, or none


def _imagenet(model: M, weights: Weights) -> M:
    """Load torchvision ImageNet weights (a state dict) into the classification model."""
    if weights is not None:
        model.load_state_dict(weights)
    return model


class VGG16Atrous(Backbone):
    """GluonCV's `vgg16_atrous` layout either way (`variant` is accepted for uniformity)."""

    def __init__(self, image_size: int, weights: Weights = None, variant: str = "") -> None:
        super().__init__()
        spec = VGG_EXTRAS_512 if image_size >= 512 else VGG_EXTRAS_300
        vgg = _imagenet(vgg16(weights=None), weights)
        self.body = SSDFeatureExtractorVGG(vgg.features, highres=False)
        cins = [1024] + [s[1][0] for s in spec[:-1]]
        self.body.extra = nn.ModuleList(
            [self.body.extra[0], *(_vgg_extra(c, s) for c, s in zip(cins, spec, strict=True))]
        )
        self.out_channels = [512, 1024] + [s[1][0] for s in spec]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x).values())

    def name_map(self) -> dict[str, str]:
        vgg = [
            f"conv{b}_{i}"
            for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
            for i in range(1, n + 1)
        ]
        names = [*vgg, "fc6", "fc7"]
        out: dict[str, str] = {}
        extra: dict[int, int] = {}
        k = 0
        for path, module in self.body.named_modules():
            if not isinstance(module, nn.Conv2d):
                continue
            if k < len(names):
                out[f"body.{path}"] = names[k]
                k += 1
            else:
                block = int(path.split(".")[1])
                extra[block] = extra.get(block, 0) + 1
                out[f"body.{path}"] = f"extra{block}_conv{extra[block]}"
        out["body.scale_weight"] = "conv4_3_norm"
        return out


def _gluoncv_bottlenecks(resnet: ResNet) -> None:
    """Turn torchvision's ResNet-50 (v1.5: stride on the 3x3) into GluonCV's `resnet50_v1`
    (`BottleneckV1`: stride on the first 1x1, and a bias on both 1x1 convolutions)."""
    for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        for unit in stage.children():
            assert isinstance(unit, Bottleneck)
            stride = unit.conv2.stride
            unit.conv2.stride = (1, 1)
            for name in ("conv1", "conv3"):
                old: nn.Conv2d = getattr(unit, name)
                new = nn.Conv2d(old.in_channels, old.out_channels, 1, bias=True)
                with torch.no_grad():
                    new.weight.copy_(old.weight)
                    new.bias.zero_()  # type: ignore[union-attr]
                setattr(unit, name, new)
            unit.conv1.stride = stride


class ResNet50SSD(Backbone):
    """`variant=""`: torchvision's ResNet-50 (its ImageNet weights fit); `variant="gluoncv"`:
    GluonCV's v1 bottlenecks, for GluonCV's weights. The expanders are GluonCV's either way."""

    def __init__(self, image_size: int, weights: Weights = None, variant: str = "") -> None:
        super().__init__()
        r = _imagenet(resnet50(weights=None), weights)
        if variant == "gluoncv":
            _gluoncv_bottlenecks(r)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = r.layer1, r.layer2, r.layer3, r.layer4
        filters = [512, 512, 256, 256]
        cins = [2048, *filters[:-1]]
        eps = GLUONCV_EXPANDER_EPS if variant == "gluoncv" else 1e-5
        self.extras = nn.ModuleList(
            _expander(c, f, trans=f, eps=eps) for c, f in zip(cins, filters, strict=True)
        )
        self.out_channels = [1024, 2048, *filters]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c4 = self.layer3(self.layer2(self.layer1(self.stem(x))))
        out = [c4, self.layer4(c4)]
        for block in self.extras:
            out.append(block(out[-1]))
        return out

    def name_map(self) -> dict[str, str]:
        out = {"stem.0": "conv0", "stem.1": "bn0"}
        for path, module in self.named_modules():
            m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn)(\d)", path)
            if m:
                out[path] = f"stage{m[1]}_unit{int(m[2]) + 1}_{m[3]}{m[4]}"
            m = re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.(\d)", path)
            if m:
                out[path] = f"stage{m[1]}_unit{int(m[2]) + 1}_sc" + ("" if m[3] == "0" else "_bn")
            m = re.fullmatch(r"extras\.(\d)\.(\d)", path)
            if m and isinstance(module, nn.Conv2d | nn.BatchNorm2d):
                kind = "conv" if isinstance(module, nn.Conv2d) else "bn"
                out[path] = f"extra{int(m[1]) + 1}_{kind}{1 if int(m[2]) < 3 else 2}"
        return out


class MobileNetV3SSD(Backbone):
    def __init__(self, image_size: int, weights: Weights = None, variant: str = "") -> None:
        super().__init__()
        # BN momentum 0.1 (torchvision uses 0.01 for long ImageNet runs): with 0.01 the
        # running statistics lag far behind in short detection runs and eval-mode
        # predictions are garbage while the training loss looks fine.
        norm = functools.partial(nn.BatchNorm2d, eps=0.001, momentum=0.1)
        features = _imagenet(mobilenet_v3_small(weights=None, norm_layer=norm), weights).features
        self.c4 = features[:9]  # stride 16, 48 channels
        self.c5 = features[9:]  # stride 32, 576 channels
        filters = [256, 256, 128, 128]
        cins = [576, *filters[:-1]]
        self.extras = nn.ModuleList(  # half-width transitions: light enough for a CPU
            _expander(c, f, trans=f // 2) for c, f in zip(cins, filters, strict=True)
        )
        self.out_channels = [48, 576, *filters]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c4 = self.c4(x)
        out = [c4, self.c5(c4)]
        for block in self.extras:
            out.append(block(out[-1]))
        return out

    def name_map(self) -> dict[str, str]:
        out = {}
        for path, module in self.named_modules():
            if isinstance(module, nn.Conv2d | nn.BatchNorm2d) and path.startswith(("c4.", "c5.")):
                out[path] = "block" + path.split(".", 1)[1].replace(".", "_")
            m = re.fullmatch(r"extras\.(\d)\.(\d)", path)
            if m and isinstance(module, nn.Conv2d | nn.BatchNorm2d):
                kind = "conv" if isinstance(module, nn.Conv2d) else "bn"
                out[path] = f"extra{int(m[1]) + 1}_{kind}{1 if int(m[2]) < 3 else 2}"
        return out


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "vgg-16": VGG16Atrous,
    "resnet-50": ResNet50SSD,
    "mobilenet-v3": MobileNetV3SSD,
}

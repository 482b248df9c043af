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
- `mobilenet-v3` (sdod extension): MobileNetV3-Small with the same six-map layout (the
  stride-16 map taken at the expansion layer, as SSDlite) and lighter expanders, so that
  CPU users can train in minutes.
- `resnet-lite` (sdod extension): a small dense ResNet, the demo's network: as fast per
  step on a CPU as `mobilenet-v3` and much quicker to learn from scratch; no ImageNet
  weights.

`Backbone.name_map()` (through `SSD.layer_names()`) maps MXNet-style names (`conv1_1`,
`fc7`, `stage3_unit2_conv1`, ...) to parameters, for `freeze_layer_pattern`.
"""

from __future__ import annotations

import functools
import itertools
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


def _with_extras(c4: torch.Tensor, c5: torch.Tensor, extras: nn.ModuleList) -> list[torch.Tensor]:
    """The stride-16 and stride-32 maps, then each expander on the map before it."""
    out = [c4, c5]
    for block in extras:
        out.append(block(out[-1]))
    return out


def _extra_name(path: str, module: nn.Module) -> str | None:
    """`extras.K.I` (an `_expander`'s conv or BatchNorm) -> `extra{K+1}_{conv|bn}{1|2}`."""
    m = re.fullmatch(r"extras\.(\d)\.(\d)", path)
    if m is None or not isinstance(module, nn.Conv2d | nn.BatchNorm2d):
        return None
    kind = "conv" if isinstance(module, nn.Conv2d) else "bn"
    return f"extra{int(m[1]) + 1}_{kind}{1 if int(m[2]) < 3 else 2}"


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
        return _with_extras(c4, self.layer4(c4), self.extras)

    def name_map(self) -> dict[str, str]:
        out = {"stem.0": "conv0", "stem.1": "bn0"}
        for path, module in self.named_modules():
            m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn)(\d)", path)
            if m:
                out[path] = f"stage{m[1]}_unit{int(m[2]) + 1}_{m[3]}{m[4]}"
            m = re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.(\d)", path)
            if m:
                out[path] = f"stage{m[1]}_unit{int(m[2]) + 1}_sc" + ("" if m[3] == "0" else "_bn")
            extra = _extra_name(path, module)
            if extra:
                out[path] = extra
        return out


def _mobilenet_path(path: str) -> str:
    """`c4.3.block.0.0` / `c4.9.0` / `c5.0.1.0` / `c5.2.block.1.0` -> the path in
    torchvision's `features` (`3.block.0.0`, `9.block.0.0`, `9.block.1.0`, `11.block.1.0`), so
    that layer names do not depend on where the maps are split."""
    part, index, rest = [*path.split(".", 2), ""][:3]
    i = int(index)
    if part == "c4":
        return f"9.block.0.{rest}" if i == 9 else f"{i}.{rest}"
    if i == 0:
        return f"9.block.{rest}"
    return f"{i + 9}.{rest}"


class MobileNetV3SSD(Backbone):
    """MobileNetV3-Small with SSDlite's split: the stride-16 map is the 288-channel output of
    the first stride-32 block's expansion (torchvision's `ssdlite320_mobilenet_v3_large`
    takes the same point of its larger network), not the 48-channel stage output: the
    smallest objects' predictors get the richer features (docs/quality.md, row 18)."""

    def __init__(self, image_size: int, weights: Weights = None, variant: str = "") -> None:
        super().__init__()
        # BN momentum 0.1 (torchvision uses 0.01 for long ImageNet runs): with 0.01 the
        # running statistics lag far behind in short detection runs and eval-mode
        # predictions are garbage while the training loss looks fine.
        norm = functools.partial(nn.BatchNorm2d, eps=0.001, momentum=0.1)
        features = _imagenet(mobilenet_v3_small(weights=None, norm_layer=norm), weights).features
        split = features[9].block  # expand 1x1 | depthwise 5x5 stride 2 | SE | project
        self.c4 = nn.Sequential(*features[:9], split[0])  # stride 16, 288 channels
        self.c5 = nn.Sequential(split[1:], *features[10:])  # stride 32, 576 channels
        filters = [256, 256, 128, 128]
        cins = [576, *filters[:-1]]
        self.extras = nn.ModuleList(  # half-width transitions: light enough for a CPU
            _expander(c, f, trans=f // 2) for c, f in zip(cins, filters, strict=True)
        )
        self.out_channels = [split[0].out_channels, 576, *filters]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c4 = self.c4(x)
        return _with_extras(c4, self.c5(c4), self.extras)

    def name_map(self) -> dict[str, str]:
        out = {}
        for path, module in self.named_modules():
            if isinstance(module, nn.Conv2d | nn.BatchNorm2d) and path.startswith(("c4.", "c5.")):
                out[path] = "block" + _mobilenet_path(path).replace(".", "_")
            extra = _extra_name(path, module)
            if extra:
                out[path] = extra
        return out


def _conv_bn(cin: int, cout: int, stride: int = 1, relu: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]
    return [*layers, nn.ReLU(inplace=True)] if relu else layers


class _BasicBlock(nn.Module):
    """ResNet's basic block at a constant width: two 3x3 convolutions and the identity."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(width, width), *_conv_bn(width, width, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class ResNetLiteSSD(Backbone):
    """`resnet-lite` (sdod extension): a small ResNet of dense 3x3 convolutions for training
    from scratch on a CPU. A 3x3/2 stem to 16 channels, then four stages (a 3x3/2 convolution
    to 32, 64, 128, 256 channels and one basic block each); the stride-8, -16 and -32 stages
    are the first three maps, then three of mobilenet-v3's expanders: six maps, 38x38 to 2x2
    at 300, with anchors from 21 pixels (`anchors.RESNET_LITE_300`). About as fast per step
    as mobilenet-v3 on a CPU, but it learns far sooner from scratch, since depthwise and
    squeeze-excite layers need long schedules; the stride-8 map is what finds small objects
    (docs/quality.md, rows 21-27). It has no ImageNet weights: it trains from scratch only."""

    WIDTHS = (16, 32, 64, 128, 256)

    def __init__(self, image_size: int, weights: Weights = None, variant: str = "") -> None:
        super().__init__()
        if weights is not None:
            raise ValueError("resnet-lite has no ImageNet weights; train it from scratch")
        w = self.WIDTHS
        self.stem = nn.Sequential(*_conv_bn(3, w[0], 2))
        self.stages = nn.ModuleList(
            nn.Sequential(*_conv_bn(cin, cout, 2), _BasicBlock(cout))
            for cin, cout in itertools.pairwise(w)
        )
        filters = [256, 256, 128]
        cins = [w[-1], *filters[:-1]]
        self.extras = nn.ModuleList(
            _expander(c, f, trans=f // 2) for c, f in zip(cins, filters, strict=True)
        )
        self.out_channels = [w[-3], w[-2], w[-1], *filters]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stages[1](self.stages[0](self.stem(x)))  # stride 8
        c4 = self.stages[2](c3)
        return [c3, *_with_extras(c4, self.stages[3](c4), self.extras)]

    def name_map(self) -> dict[str, str]:
        out = {"stem.0": "conv0", "stem.1": "bn0"}
        for path, module in self.named_modules():
            if not isinstance(module, nn.Conv2d | nn.BatchNorm2d):
                continue
            kind = "conv" if isinstance(module, nn.Conv2d) else "bn"
            m = re.fullmatch(r"stages\.(\d)\.(\d)", path)
            if m:  # the stage's stride-2 entry
                out[path] = f"stage{int(m[1]) + 1}_{kind}0"
            m = re.fullmatch(r"stages\.(\d)\.3\.body\.(\d)", path)
            if m:
                out[path] = f"stage{int(m[1]) + 1}_unit1_{kind}{1 if int(m[2]) < 3 else 2}"
            extra = _extra_name(path, module)
            if extra:
                out[path] = extra
        return out


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "vgg-16": VGG16Atrous,
    "resnet-50": ResNet50SSD,
    "mobilenet-v3": MobileNetV3SSD,
    "resnet-lite": ResNetLiteSSD,
}

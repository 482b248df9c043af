"""The single changes of `docs/quality.md`, as patches over sdod (bench/_quality_ablation.py).

`head_init`, `prior`, `xavier`, `sephead` (the predictors); `bn_momentum`, `c4`, `dense`
(mobilenet-v3's layout; `c4` and `dense` are in sdod now, as mobilenet-v3's split and as
`resnet-lite`, so they reproduce rows 18-19 on the code of their time); `neg_ratio`,
`warmup`, `anchors` (matching and schedule); `ema` (validate an average of the weights);
`light_crop=p,min_scale` (the light policy's crop); `s8=sizes` (resnet-lite's maps from
stride 8: in sdod now as `resnet-lite`'s layout, so it reproduces rows 27-28 on the code of
commit `ea21e6d` only)."""

from __future__ import annotations

import functools
import itertools
import math

import torch
from torch import nn


def apply(ch: dict) -> None:
    import sdod.model.anchors as an
    import sdod.model.backbones as bb
    import sdod.model.loss as loss
    import sdod.train.loop as loop

    if "bn_momentum" in ch:
        m = float(ch["bn_momentum"])
        orig = bb.MobileNetV3SSD.__init__

        def init(self, *a, **k):  # type: ignore[no-untyped-def]
            orig(self, *a, **k)
            for mod in self.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.momentum = m

        bb.MobileNetV3SSD.__init__ = init
    if "neg_ratio" in ch:
        loss.NEGATIVE_RATIO = int(ch["neg_ratio"])
        orig_loss = loss.multibox_loss
        loop.multibox_loss = functools.partial(orig_loss, negative_ratio=int(ch["neg_ratio"]))
    if "warmup" in ch:
        loop.MAX_WARMUP_ITERS = int(ch["warmup"])
    if "anchors" in ch:
        # ssdlite-like: scales linear 0.2..0.95 (+1.0) of the image, ratios 2 and 3 at each map
        lo, hi = (float(x) for x in ch["anchors"].split(","))
        s = [lo + (hi - lo) * k / 5 for k in range(6)] + [1.0]
        preset = an.AnchorPreset(300, tuple(x * 300 for x in s), (an.R5,) * 6, None)
        an.PRESETS[("mobilenet-v3", 300)] = preset
    if "c4" in ch:
        orig_c4 = bb.MobileNetV3SSD.__init__

        def init_c4(self, image_size, weights=None, variant=""):  # type: ignore[no-untyped-def]
            orig_c4(self, image_size, weights, variant)
            feats = nn.Sequential(*self.c4, *self.c5)
            # expansion of the first stride-32 block (index 9): 288 channels at stride 16
            self.c4 = nn.Sequential(*feats[:9], feats[9].block[0])
            rest = feats[9]
            rest.block = rest.block[1:]
            self.c5 = nn.Sequential(_NoRes(rest), *feats[10:])
            self.out_channels = [288, *self.out_channels[1:]]

        bb.MobileNetV3SSD.__init__ = init_c4
    if "ema" in ch:
        _ema(loop, float(ch["ema"]))
    if "light_crop" in ch:  # "p,min_scale": the light policy's crop, how often and how small
        _light_crop(*(float(x) for x in ch["light_crop"].split(",")))
    if "dense" in ch:
        widths = tuple(int(w) for w in ch["dense"].split(","))
        orig_dense = bb.MobileNetV3SSD.__init__

        def init_dense(self, image_size, weights=None, variant=""):  # type: ignore[no-untyped-def]
            orig_dense(self, image_size, weights, variant)
            self.c4, self.c5 = _dense_body(widths)
            self.extras[0] = bb._expander(widths[-1], 256, trans=128)
            self.out_channels = [widths[-2], widths[-1], *self.out_channels[2:]]

        bb.MobileNetV3SSD.__init__ = init_dense

    if "s8" in ch:  # resnet-lite's maps from stride 8 (38x38 at 300), sizes "s0,...,s6"
        _stride8(tuple(float(x) for x in ch["s8"].split(",")))


def _light_crop(p: float, min_scale: float) -> None:
    import sdod.data.augment as aug
    import sdod.data.dataset as ds

    def augment(image, boxes, labels, *, size, policy):  # type: ignore[no-untyped-def]
        if policy == "light" and aug._rand() < p:
            image, boxes, labels = aug.iou_crop(image, boxes.float(), labels, min_scale=min_scale)
        return aug.augment(image, boxes, labels, size=size, policy="light-nocrop")

    orig = aug.augment

    def base(image, boxes, labels, *, size, policy):  # type: ignore[no-untyped-def]
        if policy == "light-nocrop":  # flip, resize, colour: the light policy after its crop
            boxes = boxes.float()
            if aug._rand() < 0.5:
                image, boxes = aug.hflip(image, boxes)
            image, boxes = aug.resize(image, boxes, size)
            image = aug.color_distort(image)
            keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
            return image.contiguous(), boxes[keep], labels[keep]
        return orig(image, boxes, labels, size=size, policy=policy)

    aug.augment = base
    ds.augment = augment


def _cbr(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class _Basic(nn.Module):
    """ResNet's basic block at constant width."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_cbr(c, c), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        )

    def forward(self, x):  # type: ignore[no-untyped-def]
        return torch.relu(x + self.body(x))


def _dense_body(widths: tuple[int, ...]) -> tuple[nn.Sequential, nn.Sequential]:
    """A plain ResNet-like body: stride-2 conv per stage, then one basic block; the stride-16
    and stride-32 stages are the two maps."""
    layers: list[nn.Module] = [*_cbr(3, widths[0], 2)]
    for cin, cout in itertools.pairwise(widths[:-1]):
        layers += [*_cbr(cin, cout, 2), _Basic(cout)]
    c5 = nn.Sequential(*_cbr(widths[-2], widths[-1], 2), _Basic(widths[-1]))
    return nn.Sequential(*layers), c5


def _ema(loop, decay: float) -> None:  # type: ignore[no-untyped-def]
    """Validate and keep an exponential moving average of the weights (and BN buffers)."""
    import copy

    orig_step, orig_validate, orig_keep = (
        loop._Epochs._step,
        loop._Epochs.validate,
        loop._keep_if_best,
    )
    state = {}

    def step(self, *a):  # type: ignore[no-untyped-def]
        out = orig_step(self, *a)
        if "ema" not in state:
            state["ema"], state["n"] = copy.deepcopy(self.model), 0
        state["n"] += 1
        d = min(decay, (1 + state["n"]) / (10 + state["n"]))
        with torch.no_grad():
            for e, m in zip(
                state["ema"].state_dict().values(), self.model.state_dict().values(), strict=True
            ):
                if e.dtype.is_floating_point:
                    e.mul_(d).add_(m.detach(), alpha=1 - d)
                else:
                    e.copy_(m)
        return out

    def validate(self, epoch):  # type: ignore[no-untyped-def]
        live = self.model
        self.model = state["ema"]
        try:
            return orig_validate(self, epoch)
        finally:
            self.model = live

    def keep(result, entry, model, validated):  # type: ignore[no-untyped-def]
        return orig_keep(result, entry, state.get("ema", model), validated)

    loop._Epochs._step, loop._Epochs.validate, loop._keep_if_best = step, validate, keep


class _NoRes(nn.Module):
    def __init__(self, block):  # type: ignore[no-untyped-def]
        super().__init__()
        self.block = block.block

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.block(x)


def _sep_head(conv: nn.Conv2d) -> nn.Sequential:
    """SSDlite's predictor: depthwise 3x3 + BatchNorm + ReLU6, then a 1x1 to the outputs."""
    c = conv.in_channels
    return nn.Sequential(
        nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
        nn.BatchNorm2d(c, eps=0.001),
        nn.ReLU6(inplace=True),
        nn.Conv2d(c, conv.out_channels, 1),
    )


def after_model(model, ch: dict) -> None:  # type: ignore[no-untyped-def]
    if "sephead" in ch:
        model.class_heads = nn.ModuleList(_sep_head(h) for h in model.class_heads)
        model.box_heads = nn.ModuleList(_sep_head(h) for h in model.box_heads)
    last = [h[-1] if isinstance(h, nn.Sequential) else h for h in model.class_heads]
    heads = last + [h[-1] if isinstance(h, nn.Sequential) else h for h in model.box_heads]
    if "head_init" in ch:
        std = float(ch["head_init"])
        for h in heads:
            nn.init.normal_(h.weight, std=std)
            nn.init.zeros_(h.bias)
    if "xavier" in ch:
        for h in heads:
            nn.init.xavier_uniform_(h.weight)
            nn.init.zeros_(h.bias)
    if "prior" in ch:
        p = float(ch["prior"])
        k = model.config.num_classes + 1
        for h in last:
            with torch.no_grad():
                b = h.bias.view(-1, k)
                b[:, 0] = math.log((1 - p) / p * (k - 1))
                b[:, 1:] = 0


def _stride8(sizes: tuple[float, ...]) -> None:
    """`resnet-lite` with its first map at stride 8 (the 64-channel stage) and three
    expanders after stride 32 instead of four: six maps, the first four times as dense."""
    import sdod.model.anchors as an
    import sdod.model.backbones as bb

    orig = bb.ResNetLiteSSD.__init__

    def init(self, image_size, weights=None, variant=""):  # type: ignore[no-untyped-def]
        orig(self, image_size, weights, variant)
        self.extras = self.extras[:3]
        self.out_channels = [self.WIDTHS[2], *self.out_channels[:5]]

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = self.stages[0](self.stem(x))
        c3 = self.stages[1](x)
        c4 = self.stages[2](c3)
        return [c3, *bb._with_extras(c4, self.stages[3](c4), self.extras)]

    bb.ResNetLiteSSD.__init__ = init
    bb.ResNetLiteSSD.forward = forward
    an.PRESETS[("resnet-lite", 300)] = an.AnchorPreset(
        300, sizes, (an.R3, an.R5, an.R5, an.R5, an.R3, an.R3), None
    )

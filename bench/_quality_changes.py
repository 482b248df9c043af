"""The single changes of `docs/quality.md`, as patches over sdod (bench/_quality_ablation.py).

Rows measured before the fixes landed used `head_init`, `prior` and `c4` on the code of the
time; they were not kept (docs/quality.md says why), so on today's code they apply as they did."""

from __future__ import annotations

import functools
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


class _NoRes(nn.Module):
    def __init__(self, block):  # type: ignore[no-untyped-def]
        super().__init__()
        self.block = block.block

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.block(x)


def after_model(model, ch: dict) -> None:  # type: ignore[no-untyped-def]
    heads = list(model.class_heads) + list(model.box_heads)
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
        for h in model.class_heads:
            with torch.no_grad():
                b = h.bias.view(-1, k)
                b[:, 0] = math.log((1 - p) / p * (k - 1))
                b[:, 1:] = 0

"""SSD network, box coding, matching, loss (vs a slow reference), freezing, post-processing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sdod.model.boxes import cxcywh_to_xyxy, decode, encode, match
from sdod.model.loss import multibox_loss
from sdod.model.postprocess import postprocess
from sdod.model.ssd import SSD, SSDConfig, anchors_for


@pytest.mark.parametrize(
    ("net", "size", "anchors"),
    [("vgg-16", 300, 8732), ("vgg-16", 512, 24564), ("resnet-50", 300, 2268),
     ("resnet-50", 512, 6132), ("mobilenet-v3", 300, 2268), ("resnet-lite", 300, 8744)],
)  # fmt: skip
def test_output_shapes(net: str, size: int, anchors: int) -> None:
    model = SSD(SSDConfig(net, num_classes=5, image_size=size)).eval()
    with torch.no_grad():
        cls, box = model(torch.zeros(1, 3, size, size, dtype=torch.uint8))
    assert cls.shape == (1, anchors, 6) and box.shape == (1, anchors, 4)
    assert model.anchors.shape == (anchors, 4)


@pytest.mark.parametrize("net", ["mobilenet-v3", "resnet-lite"])
def test_every_parameter_of_the_light_networks_has_one_layer_name(net: str) -> None:
    with torch.device("meta"):
        model = SSD(SSDConfig(net, num_classes=2, image_size=300))
    named = [id(p) for params in model.layer_names().values() for p in params]
    assert sorted(named) == sorted(id(p) for p in model.parameters())


def test_mobilenet_layer_names_are_torchvisions_wherever_the_maps_are_split() -> None:
    """The stride-16 map is taken inside block 9 (SSDlite's split); freeze_layer_pattern
    still sees MobileNet's own layer names, one per conv and BatchNorm."""
    from torchvision.models import mobilenet_v3_small

    features = mobilenet_v3_small(weights=None).features
    theirs = {
        "block" + path.replace(".", "_")
        for path, m in features.named_modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.BatchNorm2d)
    }
    model = SSD(SSDConfig("mobilenet-v3", num_classes=2, image_size=300))
    ours = {name for name in model.layer_names() if name.startswith("block")}
    assert ours == theirs
    assert model.backbone.out_channels[0] == 288  # the expansion of block 9, not block 8's 48
    assert [p.shape for p in model.layer_names()["block9_block_1_0"]] == [(288, 1, 5, 5)]


def test_encode_decode_round_trip() -> None:
    anchors = torch.tensor([[50.0, 50.0, 20.0, 40.0], [10.0, 80.0, 30.0, 30.0]])
    boxes = torch.tensor([[42.0, 35.0, 61.0, 72.0], [0.0, 60.0, 25.0, 99.0]])
    torch.testing.assert_close(decode(encode(boxes, anchors), anchors), boxes)
    golden = encode(
        boxes[:1], anchors[:1]
    )  # ((51.5-50)/20/0.1, (53.5-50)/40/0.1, log(19/20)/0.2, log(37/40)/0.2)
    torch.testing.assert_close(
        golden, torch.tensor([[0.75, 0.875, math.log(0.95) / 0.2, math.log(0.925) / 0.2]])
    )


def test_match_gives_every_box_an_anchor_and_thresholds_the_rest() -> None:
    anchors = torch.tensor(
        [[10.0, 10.0, 20.0, 20.0], [30.0, 10.0, 20.0, 20.0], [90.0, 90.0, 10.0, 10.0]]
    )
    boxes = torch.tensor(
        [[0.0, 0.0, 20.0, 20.0], [85.0, 85.0, 115.0, 115.0]]
    )  # 2nd: IoU 0.11 with anchor 2
    cls_t, box_t = match(boxes, torch.tensor([3, 0]), anchors)
    assert cls_t.tolist() == [4, 0, 1]  # exact match; nothing; forced best match for the small one
    assert box_t[1].abs().sum() == 0
    cls_empty, _ = match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), anchors)
    assert cls_empty.tolist() == [0, 0, 0]


def _reference_loss(cls, box, cls_t, box_t, ratio=3):  # type: ignore[no-untyped-def]
    """Per image, per anchor, in plain Python: the definition the batched loss must equal."""
    total_ce, total_l1, total_pos = 0.0, 0.0, 0
    for b in range(cls.shape[0]):
        ce = [
            F.cross_entropy(cls[b, a : a + 1], cls_t[b, a : a + 1]).item()
            for a in range(cls.shape[1])
        ]
        pos = [a for a in range(cls.shape[1]) if cls_t[b, a] > 0]
        negs = sorted((a for a in range(cls.shape[1]) if cls_t[b, a] == 0), key=lambda a: -ce[a])
        chosen = pos + negs[: ratio * len(pos)]
        total_ce += sum(ce[a] for a in chosen)
        for a in pos:
            total_l1 += F.smooth_l1_loss(box[b, a], box_t[b, a], reduction="sum").item()
        total_pos += len(pos)
    return total_ce / max(total_pos, 1), total_l1 / max(total_pos, 1)


@pytest.mark.parametrize("seed", range(4))
def test_loss_matches_the_slow_reference(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(3, 50, 4, generator=g)
    box = torch.randn(3, 50, 4, generator=g)
    cls_t = torch.where(
        torch.rand(3, 50, generator=g) < 0.15, torch.randint(1, 4, (3, 50), generator=g), 0
    )
    cls_t[2] = 0  # an image without positives contributes no negatives either
    box_t = torch.randn(3, 50, 4, generator=g)
    ce, l1 = multibox_loss(cls, box, cls_t, box_t)
    ref_ce, ref_l1 = _reference_loss(cls, box, cls_t, box_t)
    assert ce.item() == pytest.approx(ref_ce, rel=1e-5)
    assert l1.item() == pytest.approx(ref_l1, rel=1e-5)


def test_loss_shape_errors_name_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"logits \(1, 5, 3\)"):
        multibox_loss(
            torch.zeros(1, 5, 3),
            torch.zeros(1, 5, 4),
            torch.zeros(1, 4, dtype=torch.int64),
            torch.zeros(1, 5, 4),
        )


def test_freeze_layer_pattern_freezes_named_layers_and_rejects_no_match() -> None:
    model = SSD(SSDConfig("resnet-50", 2, 300))
    frozen = model.freeze("^(conv0|stage1_)")
    assert (
        "conv0" in frozen and "stage1_unit3_conv3" in frozen and "stage2_unit1_conv1" not in frozen
    )
    assert not model.backbone.stem[0].weight.requires_grad
    assert model.backbone.layer2[0].conv1.weight.requires_grad
    with pytest.raises(ValueError, match="matches no layer of resnet-50"):
        model.freeze("^conv9_")


def test_postprocess_finds_a_planted_box_and_suppresses_duplicates() -> None:
    config = SSDConfig("mobilenet-v3", 2, 300)
    anchors = anchors_for(config)
    a = anchors.shape[0]
    cls = torch.full((1, a, 3), -10.0)
    cls[..., 0] = 10.0
    target = torch.tensor([[100.0, 120.0, 180.0, 200.0]])
    best = int(torch.argmax(torchvision_iou(target, cxcywh_to_xyxy(anchors))))
    box = torch.zeros(1, a, 4)
    box[0, best] = encode(target, anchors[best : best + 1])[0]
    cls[0, best] = torch.tensor([-5.0, -5.0, 5.0])  # class 1
    dets = postprocess(cls, box, anchors, nms_threshold=0.45)[0]
    assert dets.labels.tolist() == [1]
    torch.testing.assert_close(dets.boxes, target)


def torchvision_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from torchvision.ops import box_iou

    return box_iou(a, b)

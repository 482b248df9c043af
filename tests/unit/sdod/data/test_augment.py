"""SSD augmentation functions: geometry stays consistent, colour stays in range."""

from __future__ import annotations

import pytest
import torch

from sdod.data import augment as A


def _scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image = torch.zeros(3, 200, 300, dtype=torch.uint8)
    boxes = torch.tensor([[20.0, 30.0, 120.0, 150.0], [200.0, 50.0, 280.0, 110.0]])
    for x0, y0, x1, y1 in boxes.int().tolist():
        image[:, y0:y1, x0:x1] = 255  # boxes are white: geometry can be checked on pixels
    return image, boxes, torch.tensor([0, 2])


@pytest.mark.parametrize("policy", ["ssd", "light", "aerial", "none"])
def test_boxes_follow_the_pixels_through_every_policy(policy: str) -> None:
    torch.manual_seed(0)
    image, boxes, labels = _scene()
    for _ in range(60):
        out, b, lab = A.augment(image, boxes, labels, size=300, policy=policy)
        assert out.shape == (3, 300, 300) and out.dtype == torch.uint8
        assert len(b) == len(lab) and set(lab.tolist()) <= {0, 2}
        assert (b >= 0).all() and (b <= 300).all()
        assert ((b[:, 2:] - b[:, :2]) >= 1).all()
        if policy != "none":
            continue
        for x0, y0, x1, y1 in b.round().int().tolist():  # inside each box: white
            assert out[:, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].min() > 200


def test_iou_crop_keeps_boxes_by_centre_and_clips_them() -> None:
    torch.manual_seed(1)
    image, boxes, labels = _scene()
    cropped = 0
    for _ in range(100):
        out, b, _lab = A.iou_crop(image, boxes, labels)
        h, w = out.shape[1:]
        assert (b[:, 0::2] <= w).all() and (b[:, 1::2] <= h).all() and (b >= 0).all()
        if (h, w) != (200, 300):
            cropped += 1
            assert len(b) >= 1  # a crop always holds a box centre
    assert 30 < cropped < 100  # "keep the whole image" is one of six options


def test_zoom_out_and_flip_move_boxes_with_the_image() -> None:
    torch.manual_seed(2)
    image, boxes, _ = _scene()
    for _ in range(5):
        canvas, moved = A.zoom_out(image, boxes)
        left, top = (moved[0, :2] - boxes[0, :2]).int().tolist()  # where the image went
        assert (moved - boxes).unique().numel() <= 2  # every box moved by the same offset
        placed = canvas[:, top : top + 200, left : left + 300]
        assert torch.equal(placed, image)  # the image, whole, at the boxes' offset
        rest = canvas.clone()
        rest[:, top : top + 200, left : left + 300] = 0
        mask = torch.ones(canvas.shape[1:], dtype=torch.bool)
        mask[top : top + 200, left : left + 300] = False
        fill = rest[:, mask]  # everything around it: the mean pixel, exactly
        assert fill.numel() == 0 or (fill == torch.tensor(A.MEAN_PIXEL).view(3, 1)).all()
    flipped, fb = A.hflip(image, boxes)
    assert torch.equal(A.hflip(flipped, fb)[1], boxes)
    x0, y0, x1, y1 = fb[0].int().tolist()
    assert flipped[:, y0:y1, x0:x1].min() == 255


def test_colour_distortion_keeps_grey_grey_under_hue_and_stays_uint8() -> None:
    torch.manual_seed(3)
    grey = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    for _ in range(30):
        out = A.color_distort(grey)
        assert out.dtype == torch.uint8 and out.shape == grey.shape
        assert (out.max(0).values.int() - out.min(0).values.int()).max() <= 1  # no tint
    assert torch.allclose(A._RGB @ A._YIQ, torch.eye(3), atol=1e-5)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_quarter_turns_and_vertical_flips_move_boxes_with_their_pixels(turns: int) -> None:
    image, boxes, _ = _scene()
    for out, moved in (A.rot90(image, boxes, turns), A.vflip(*A.rot90(image, boxes, turns))):
        assert out.shape[1:] == ((200, 300) if turns % 2 == 0 else (300, 200))
        assert int(out.sum()) == int(image.sum())  # a turn or flip loses no pixel
        for x0, y0, x1, y1 in moved.round().int().tolist():
            assert out[:, y0:y1, x0:x1].min() == 255  # the box is all white
            assert x1 - x0 in (100, 80, 120, 60) and y1 - y0 in (100, 80, 120, 60)
        white = (out[0] == 255).sum()
        assert white == sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in moved.tolist())

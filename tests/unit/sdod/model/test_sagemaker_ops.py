"""example/ssd's preprocessing and MultiBoxDetection, against what MXNet 1.9.1 wrote
(tests/fixtures/mxnet/sagemaker_ssd/README.md)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdod.model.sagemaker_detect import detections, multibox_detection
from sdod.model.sagemaker_graph import Detection
from sdod.model.sagemaker_resize import resize_linear

MX = Path(__file__).resolve().parents[3] / "fixtures" / "mxnet"
SM = MX / "sagemaker_ssd"
ARTIFACTS = ("vgg16_reduced_300_c3", "resnet50_300_c2")
SAVED = ("00_astronaut", "05_motorcycle_right_small", "17_coins_gray")
MEAN = np.array([123, 117, 104], np.float32).reshape(3, 1, 1)


def test_resize_and_mean_reproduce_mxnets_inputs_bit_for_bit_on_every_photo() -> None:
    expected = json.loads((SM / "resnet50_300_c2" / "expected.json").read_text())["images"]
    assert len(expected) == 20
    for name, entry in expected.items():
        rgb = np.asarray(Image.open(MX / "images" / name).convert("RGB"))
        chw = resize_linear(rgb, 300, 300).transpose(2, 0, 1).astype(np.float32) - MEAN
        digest = hashlib.sha256(np.ascontiguousarray(chw[None]).tobytes()).hexdigest()
        assert digest == entry["input_sha256"], name
    for artifact in ARTIFACTS:  # and the saved tensors themselves
        for image in SAVED:
            saved = np.load(SM / artifact / f"input_{image}.npy")
            rgb = np.asarray(Image.open(MX / "images" / f"{image}.jpg").convert("RGB"))
            ours = resize_linear(rgb, 300, 300).transpose(2, 0, 1).astype(np.float32) - MEAN
            assert np.array_equal(ours[None], saved)


def test_resize_copies_at_the_same_size_and_averages_an_exact_halving() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    assert np.array_equal(resize_linear(image, 6, 8), image)
    half = resize_linear(image, 3, 4).astype(int)
    four = image.reshape(4, 2, 3, 2, 3).astype(int).sum(axis=(1, 3))
    assert np.array_equal(half, (four + 2) >> 2)
    with pytest.raises(ValueError, match="uint8"):
        resize_linear(image.astype(np.float32), 3, 3)


@pytest.mark.parametrize("artifact", ARTIFACTS)
@pytest.mark.parametrize("image", SAVED)
def test_decoder_alone_reproduces_mxnets_raw_detection_output(artifact: str, image: str) -> None:
    folder = SM / artifact
    prob = np.load(folder / f"cls_prob_{image}.npy")[0]
    loc = np.load(folder / f"loc_pred_{image}.npy")[0]
    anchors = np.load(folder / "anchors.npy")[0]
    want = np.load(folder / f"detection_{image}.npy")[0]
    got = multibox_detection(prob, loc, anchors, Detection(nms_threshold=0.45, nms_topk=400))
    assert np.array_equal(got[:, 0], want[:, 0])  # class, suppressed and empty rows included
    assert np.array_equal(got[:, 1], want[:, 1])
    assert np.abs(got[:, 2:] - want[:, 2:]).max() <= 1e-6
    rows = json.loads((folder / "expected.json").read_text())["images"][f"{image}.jpg"]
    assert len(detections(got)) == len(rows["detections"])


def test_force_suppress_topk_and_threshold_semantics() -> None:
    # three anchors on one spot, classes 1, 2, 1 (scores .9, .8, .7), one weak anchor
    prob = np.array(
        [[0.1, 0.2, 0.3, 0.995], [0.9, 0.0, 0.7, 0.004], [0.0, 0.8, 0.0, 0.001]], np.float32
    )
    anchors = np.array([[0.1, 0.1, 0.5, 0.5]] * 3 + [[0.6, 0.6, 0.9, 0.9]], np.float32)
    loc = np.zeros((4, 4), np.float32)
    per_class = multibox_detection(prob, loc, anchors, Detection(nms_threshold=0.5))
    assert per_class[:, 0].tolist() == [0, 1, -1, -1]  # class 1 suppresses only class 1
    assert per_class[:3, 1].tolist() == pytest.approx([0.9, 0.8, 0.7])
    forced = multibox_detection(
        prob, loc, anchors, Detection(nms_threshold=0.5, force_suppress=True)
    )
    assert forced[:, 0].tolist() == [0, -1, -1, -1]
    top1 = multibox_detection(prob, loc, anchors, Detection(nms_threshold=0.5, nms_topk=1))
    # row 0: the best; rows 1..2: the unsorted candidates (anchor order) with class -1
    assert top1[:, 1].tolist()[:3] == pytest.approx([0.9, 0.8, 0.7])
    assert top1[:, 0].tolist() == [0, -1, -1, -1]
    assert top1[0, 2:].tolist() == pytest.approx([0.1, 0.1, 0.5, 0.5])

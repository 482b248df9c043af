"""Anchors for vgg-16 at 300 equal GluonCV's `ssd_300_vgg16_atrous_voc`, bit for bit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sdod.model.anchors import VGG16_300, generate_anchors, preset_for

MX = Path(__file__).resolve().parents[3] / "fixtures" / "mxnet"
FEATURES_300 = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]


def test_vgg16_300_anchors_equal_gluoncv_exactly() -> None:
    ours = generate_anchors(VGG16_300, FEATURES_300).numpy()
    theirs = np.load(MX / "anchors_ssd300_vgg16_voc_f32.npy")[0]
    assert ours.shape == theirs.shape == (8732, 4)
    np.testing.assert_array_equal(ours, theirs)
    meta = json.loads((MX / "anchors.json").read_text())
    assert hashlib.sha256(ours.astype("<f4").tobytes()).hexdigest() == meta["sha256_f32"]


def test_other_sizes_scale_the_nearest_preset() -> None:
    p = preset_for("vgg-16", 400)
    assert p.sizes[0] == pytest.approx(40.0) and p.steps is None
    anchors = generate_anchors(p, [(50, 50), (25, 25), (13, 13), (7, 7), (5, 5), (3, 3)])
    assert anchors[0].tolist() == pytest.approx([4.0, 4.0, 40.0, 40.0])


def test_feature_map_count_must_match_the_preset() -> None:
    with pytest.raises(ValueError, match="5 feature maps but the anchor preset has 6 layers"):
        generate_anchors(VGG16_300, FEATURES_300[:5])

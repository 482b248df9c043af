"""A regression guard for the whole numeric path (targets, loss, eval-mode network, decoding,
NMS, mAP): without augmentation, a few images must be learnt by heart."""

from __future__ import annotations

from pathlib import Path

import torch

from sdod.data.imagejson import read_image_json
from sdod.demo.dataset import make_sample_data
from sdod.evaluate.detect import detect, ground_truth
from sdod.evaluate.voc import voc_map
from sdod.hyperparameters import parse_hyperparameters
from sdod.model.ssd import SSD, SSDConfig
from sdod.train.loop import FitOptions, fit
from sdod.train.stopping import StopFlag


def test_light_network_memorises_four_images(tmp_path: Path) -> None:
    make_sample_data(tmp_path, train=4, validation=1, num_classes=3, seed=11)
    samples = read_image_json(tmp_path / "train", tmp_path / "train_annotation").samples
    torch.manual_seed(0)
    hp = parse_hyperparameters(
        {
            "num_classes": "3",
            "num_training_samples": "4",
            "base_network": "mobilenet-v3",
            "optimizer": "adam",
            "learning_rate": "0.002",
            "epochs": "150",
            "mini_batch_size": "4",
            "augmentation": "none",  # memorising: the images exactly as they are
        }
    )
    model = SSD(SSDConfig("mobilenet-v3", 3, 300))
    fit(
        model,
        hp,
        samples,
        [],
        stop=StopFlag(),
        opts=FitOptions(device=torch.device("cpu"), workers=0),
        log=lambda _: None,
    )
    det = detect(model, samples, device=torch.device("cpu"))
    assert det is not None
    score = voc_map(det, ground_truth(samples), num_classes=3).map
    assert score > 0.9, score

"""Every hyperparameter: defaults as documented, and a clear error for each bad value."""

from __future__ import annotations

import pytest

from sdod.errors import UserError
from sdod.hyperparameters import Hyperparameters, parse_hyperparameters

REQUIRED = {"num_classes": "20", "num_training_samples": "16551"}


def test_defaults_are_sagemakers() -> None:
    hp = parse_hyperparameters(REQUIRED)
    assert hp == Hyperparameters(
        num_classes=20, num_training_samples=16551, base_network="vgg-16", use_pretrained_model=1,
        epochs=30, learning_rate=0.001, lr_scheduler_factor=0.1, lr_scheduler_step=(),
        optimizer="sgd", momentum=0.9, weight_decay=0.0005, mini_batch_size=32, image_shape=300,
        label_width=350, nms_threshold=0.45, overlap_threshold=0.5, freeze_layer_pattern="",
        kv_store=None,
    )  # fmt: skip
    assert hp.max_objects == 69


def test_string_values_parse_and_round_trip() -> None:
    raw = {**REQUIRED, "base_network": "resnet-50", "lr_scheduler_step": "10, 20",
           "learning_rate": "1", "image_shape": "512", "kv_store": "dist_sync"}  # fmt: skip
    hp = parse_hyperparameters(raw)
    assert hp.lr_scheduler_step == (10, 20) and hp.learning_rate == 1.0
    assert parse_hyperparameters(hp.to_strings()) == hp


BAD = [
    ("num_classes", "0", "num_classes='0' must be an integer >= 1"),
    ("num_classes", "3.5", "num_classes='3.5' must be an integer"),
    ("num_training_samples", "-1", "num_training_samples='-1' must be an integer >= 1"),
    (
        "base_network",
        "vgg-19",
        "base_network='vgg-19' must be one of vgg-16, resnet-50, mobilenet-v3, resnet-lite",
    ),
    ("use_pretrained_model", "yes", "use_pretrained_model='yes' must be 0 or 1"),
    ("epochs", "0", "epochs='0' must be an integer >= 1"),
    ("learning_rate", "0", r"learning_rate='0' is outside its valid range \(0, 1\]"),
    ("learning_rate", "1.5", r"learning_rate='1.5' is outside its valid range \(0, 1\]"),
    ("learning_rate", "fast", r"learning_rate='fast' must be a number in \(0, 1\]"),
    ("lr_scheduler_factor", "1", r"lr_scheduler_factor='1' is outside its valid range \(0, 1\)"),
    ("lr_scheduler_step", "20,10", "must list increasing positive epochs"),
    ("lr_scheduler_step", "ten", "must be comma-separated epochs"),
    ("optimizer", "nadam", "optimizer='nadam' must be one of sgd, adam, rmsprop, adadelta"),
    ("momentum", "0", r"momentum='0' is outside its valid range \(0, 1\]"),
    ("weight_decay", "1", r"weight_decay='1' is outside its valid range \(0, 1\)"),
    ("mini_batch_size", "0", "mini_batch_size='0' must be an integer >= 1"),
    ("image_shape", "256", "image_shape='256' must be an integer >= 300"),
    ("label_width", "5", "label_width='5' must be an integer >= 7"),
    ("nms_threshold", "0", r"nms_threshold='0' is outside its valid range \(0, 1\]"),
    ("overlap_threshold", "2", r"overlap_threshold='2' is outside its valid range \(0, 1\]"),
    (
        "freeze_layer_pattern",
        "^(conv1_",
        "freeze_layer_pattern='\\^\\(conv1_' is not a valid regular",
    ),
    ("kv_store", "nccl", "kv_store='nccl' must be one of local, device, dist_sync"),
    ("augmentation", "heavy", "augmentation='heavy' must be one of ssd, light, aerial, none"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD, ids=[f"{n}={v}" for n, v, _ in BAD])
def test_each_bad_value_names_the_hyperparameter_value_and_range(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        parse_hyperparameters({**REQUIRED, name: value})


def test_unknown_and_missing_hyperparameters() -> None:
    with pytest.raises(
        UserError, match=r"unknown hyperparameter 'learningrate' \(did you mean learning_rate\?\)"
    ):
        parse_hyperparameters({**REQUIRED, "learningrate": "0.1"})
    with pytest.raises(UserError, match="num_training_samples are required"):
        parse_hyperparameters({"num_classes": "3"})
    tuned = parse_hyperparameters({**REQUIRED, "_tuning_objective_metric": "validation:mAP"})
    assert tuned.ignored == ("_tuning_objective_metric",)


def test_a_network_without_imagenet_weights_needs_use_pretrained_model_0() -> None:
    with pytest.raises(
        UserError, match=r"'resnet-lite' has no ImageNet weights.*use_pretrained_model=0"
    ):
        parse_hyperparameters({**REQUIRED, "base_network": "resnet-lite"})  # SageMaker's default 1
    hp = parse_hyperparameters(
        {**REQUIRED, "base_network": "resnet-lite", "use_pretrained_model": "0"}
    )
    assert hp.base_network == "resnet-lite" and hp.use_pretrained_model == 0


def test_validate_job_lists_the_combination_problem_only_for_the_whole_map() -> None:
    from sdod.hyperparameters import hyperparameter_problems

    fine = {**REQUIRED, "base_network": "resnet-lite", "use_pretrained_model": "0"}
    assert hyperparameter_problems(fine) == []
    (problem,) = hyperparameter_problems({**REQUIRED, "base_network": "resnet-lite"})
    assert "has no ImageNet weights" in problem and "use_pretrained_model=0" in problem

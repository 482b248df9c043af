"""Hyperparameter values as SageMaker's console and SDKs store them, and early stopping."""

from __future__ import annotations

import re

import pytest

from sdod.errors import UserError
from sdod.hyperparameters import parse_hyperparameters
from sdod.train.loop import epochs_without_improvement

BASE = {"num_classes": "3", "num_training_samples": "10"}


def test_console_values_parse_as_sagemaker_means_them() -> None:
    hp = parse_hyperparameters({**BASE, "early_stopping": "False", "freeze_layer_pattern": "false",
                                "optimizer": '"adam"', "epochs": " '12' ",
                                "use_pretrained_model": "True", "_kvstore": "device",
                                "_tuning_objective_metric": "validation:mAP"})  # fmt: skip
    assert hp.early_stopping is False and hp.freeze_layer_pattern == ""
    assert hp.optimizer == "adam" and hp.epochs == 12 and hp.use_pretrained_model == 1
    assert set(hp.ignored) == {"_kvstore", "_tuning_objective_metric"}
    on = parse_hyperparameters({**BASE, "early_stopping": "true", "early_stopping_min_epochs": "3",
                                "early_stopping_patience": "2", "early_stopping_tolerance": "0.01"})  # fmt: skip
    assert (on.early_stopping, on.early_stopping_min_epochs) == (True, 3)
    assert (on.early_stopping_patience, on.early_stopping_tolerance) == (2, 0.01)
    defaults = parse_hyperparameters(BASE)
    assert (defaults.early_stopping, defaults.early_stopping_min_epochs,
            defaults.early_stopping_patience, defaults.early_stopping_tolerance) == (False, 10, 5, 0.0)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("early_stopping", "maybe", "must be True or False"),
        ("early_stopping_tolerance", "1.5", "outside its valid range [0, 1]"),
        ("early_stopping_patience", "0", "must be an integer >= 1"),
        ("early_stoping", "True", "did you mean early_stopping"),
    ],
)
def test_bad_values_name_the_hyperparameter(name: str, value: str, says: str) -> None:
    with pytest.raises(UserError, match=re.escape(says)):
        parse_hyperparameters({**BASE, name: value})


def test_improvement_is_relative_to_the_best_so_far() -> None:
    history = [{"epoch": i, "validation:mAP": m} for i, m in enumerate([0.5, 0.6, 0.601, 0.55])]
    assert epochs_without_improvement(history, 0.0) == 1  # 0.55 is below the best
    assert epochs_without_improvement(history[:3], 0.0) == 0  # 0.601 > 0.6
    assert epochs_without_improvement(history[:3], 0.01) == 1  # +0.17% is below 1%
    assert epochs_without_improvement(history, 0.01) == 2
    assert epochs_without_improvement([{"validation:mAP": 0.0}] * 3, 0.0) == 2

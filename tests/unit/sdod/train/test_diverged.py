"""A diverged run fails at once with a message that says what to change."""

from __future__ import annotations

import pytest

from sdod.errors import UserError
from sdod.hyperparameters import parse_hyperparameters
from sdod.train.loop import _check_finite


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_training_with_the_fix(loss: float) -> None:
    hp = parse_hyperparameters(
        {"num_classes": "2", "num_training_samples": "4", "learning_rate": "0.5"}
    )
    with pytest.raises(
        UserError,
        match=r"training diverged: the loss is (nan|inf) at epoch 3, batch 7 \(learning_rate=0.5",
    ):
        _check_finite(loss, 3, 7, hp)
    _check_finite(1.5, 3, 7, hp)  # a finite loss passes

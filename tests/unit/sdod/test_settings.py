"""The environment is read in one place, each bad value refused with its rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdod.errors import UserError
from sdod.settings import RuntimeSettings


def test_values_are_read_and_typed() -> None:
    s = RuntimeSettings.from_env({
        "SDOD_SEED": "7", "SDOD_DATA_WORKERS": "0", "SDOD_TRAINING_SLOTS": "3",
        "SDOD_SLOT_DIR": "/x/slots", "SDOD_RDZV_ENDPOINT": "host-1:29400",
        "SDOD_PRETRAINED_DIR": "/w", "TORCH_HOME": "/t", "SDOD_NO_DOWNLOAD": "1",
    })  # fmt: skip
    assert (s.seed, s.data_workers, s.training_slots) == (7, 0, 3)
    assert s.slot_dir == Path("/x/slots") and s.rdzv_endpoint == "host-1:29400"
    assert s.pretrained_dir == Path("/w") and s.torch_home == Path("/t") and s.no_download


def test_unset_means_the_defaults() -> None:
    s = RuntimeSettings.from_env({})
    assert s == RuntimeSettings() and s.seed is None and s.training_slots == 1
    assert not RuntimeSettings.from_env({"SDOD_NO_DOWNLOAD": "0"}).no_download


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("SDOD_SEED", "abc", "SDOD_SEED must be an integer"),
        ("SDOD_DATA_WORKERS", "-1", "SDOD_DATA_WORKERS must be a whole number >= 0"),
        ("SDOD_TRAINING_SLOTS", "0", "SDOD_TRAINING_SLOTS must be a positive integer"),
        ("SDOD_TRAINING_SLOTS", "two", "SDOD_TRAINING_SLOTS must be a positive integer"),
    ],
)
def test_bad_values_name_the_variable_and_the_rule(name: str, value: str, rule: str) -> None:
    with pytest.raises(UserError, match=rule):
        RuntimeSettings.from_env({name: value})

"""use_pretrained_model=1: a local file, torchvision's weights API (never reached by the
tests for real), and the error when neither gives weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sdod.errors import UserError
from sdod.model import pretrained


def test_a_local_file_under_torchvisions_name_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.models import mobilenet_v3_small

    from sdod.artifact import ModelConfig

    state = mobilenet_v3_small(weights=None).state_dict()
    torch.save(state, tmp_path / "mobilenet_v3_small-047dcff4.pth")
    monkeypatch.setenv("SDOD_PRETRAINED_DIR", str(tmp_path))
    found = pretrained.find_weights("mobilenet-v3")
    assert found == tmp_path / "mobilenet_v3_small-047dcff4.pth"
    model = ModelConfig("mobilenet-v3", 3, 300).build(
        backbone_weights=pretrained.load_weights(found)
    )
    first = next(v for k, v in state.items() if k.endswith("weight") and v.dim() == 4)
    assert any(torch.equal(p.detach(), first) for p in model.backbone.parameters())


def test_the_weights_api_fills_the_hub_cache_when_downloads_are_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.models import _api

    monkeypatch.delenv("SDOD_PRETRAINED_DIR", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("SDOD_NO_DOWNLOAD", "0")
    fetched: list[str] = []

    def fake_fetch(self: object, progress: bool, check_hash: bool = False) -> dict:
        url = self.url  # type: ignore[attr-defined]
        fetched.append(url)  # what torch.hub would download, written where it would put it
        cache = tmp_path / "hub" / "checkpoints"
        cache.mkdir(parents=True, exist_ok=True)
        torch.save({}, cache / url.rsplit("/", 1)[-1])
        return {}

    monkeypatch.setattr(_api.WeightsEnum, "get_state_dict", fake_fetch)
    path = pretrained.find_weights("resnet-50")
    assert fetched == ["https://download.pytorch.org/models/resnet50-0676ba61.pth"]
    assert path == tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"


def test_offline_without_a_file_says_which_file_to_put_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SDOD_PRETRAINED_DIR", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as err:
        pretrained.find_weights("vgg-16")  # SDOD_NO_DOWNLOAD=1 in the tests: the offline path
    message = str(err.value)
    assert "vgg16-397923af.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "could not be downloaded" in message and "use_pretrained_model=0" in message

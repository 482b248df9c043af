"""use_pretrained_model=1: a local file, torchvision's weights API (never reached by the
tests for real), and the error when neither gives weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sdod.errors import UserError
from sdod.model import pretrained
from sdod.model.networks import build_network


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
    model = build_network(
        ModelConfig("mobilenet-v3", 3, 300), backbone_weights=pretrained.load_weights(found)
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


def test_sagemakers_networks_take_mxnets_imagenet_file_from_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from sdod.model.mxnet_params import read_params_bytes
    from sdod.settings import RuntimeSettings

    arrays = read_params_bytes(_fixture_params())
    (tmp_path / "vgg16_reduced-0001.params").write_bytes(_fixture_params())
    monkeypatch.setenv("SDOD_PRETRAINED_DIR", str(tmp_path))
    found, source = pretrained.mxnet_backbone("vgg-16", RuntimeSettings.from_env())
    assert source == str(tmp_path / "vgg16_reduced-0001.params")
    assert np.array_equal(found["arg:conv1_1_weight"], arrays["arg:conv1_1_weight"])


def test_vgg16_falls_back_to_torchvisions_file_and_resnet50_says_where_mxnets_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdod.settings import RuntimeSettings

    monkeypatch.setenv("SDOD_PRETRAINED_DIR", str(tmp_path))
    monkeypatch.setenv("SDOD_NO_DOWNLOAD", "1")
    settings = RuntimeSettings.from_env()
    with pytest.raises(UserError) as error:
        pretrained.mxnet_backbone("resnet-50", settings)
    message = str(error.value)
    assert "resnet-50-0000.params" in message and "data.mxnet.io" in message
    assert str(tmp_path) in message and "use_pretrained_model=0" in message
    with pytest.raises(UserError, match=r"vgg16_reduced-0001\.params.*vgg16-397923af\.pth"):
        pretrained.mxnet_backbone("vgg-16", settings)

    seen: list[Path] = []
    monkeypatch.setattr(pretrained, "find_weights", lambda net, s=None: tmp_path / "tv.pth")
    monkeypatch.setattr(pretrained, "load_weights", lambda path: seen.append(path) or {})
    with pytest.raises(UserError, match="not torchvision's VGG-16"):  # it went to the fallback
        pretrained.mxnet_backbone("vgg-16", settings)
    assert seen == [tmp_path / "tv.pth"]


def _fixture_params() -> bytes:
    """The `.params` of the fixture's SageMaker VGG artifact (MXNet wrote it; it names
    vgg16_reduced's layers as MXNet's ImageNet file does)."""
    import tarfile

    sm = Path(__file__).resolve().parents[3] / "fixtures" / "mxnet" / "sagemaker_ssd"
    with tarfile.open(sm / "vgg16_reduced_300_c3" / "model.tar.gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".params"))
        data = tar.extractfile(member)
        assert data is not None
        return data.read()

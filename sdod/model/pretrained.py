"""ImageNet weights for `use_pretrained_model=1` (SageMaker's default).

Looked for, in order: `$SDOD_PRETRAINED_DIR`, then torchvision's cache
(`$TORCH_HOME/hub/checkpoints`, default `~/.cache/torch/hub/checkpoints`), under
torchvision's file names, or `<base_network>.safetensors` / `<base_network>.pth`. When none
is there, torchvision's weights API downloads its file into that cache (checking its hash),
unless `SDOD_NO_DOWNLOAD=1` (the tests set it) or the machine cannot reach the network:
then one error says which file to put where.

`vgg-16` and `resnet-50` train SageMaker's networks (`sdod/model/sagemaker_layout.py`),
which start from MXNet's ImageNet files, read with sdod's `.params` reader: `MXNET_FILES`
names them and where they are published. sdod does not download them (nobody has pinned
their hashes for it to check against); put the file in one of the folders above. Without
it, `vgg-16` falls back to torchvision's VGG-16 (found or downloaded as above), its `fc6`
and `fc7` subsampled as the SSD paper's reduced VGG; SageMaker's ResNet-50 is the
pre-activation network (`bn_data`), which torchvision's ResNet-50 is not, so it has no
fallback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sdod.errors import UserError
from sdod.settings import RuntimeSettings

TORCHVISION_WEIGHTS = {  # torchvision's weights enum for each base network
    "vgg-16": ("VGG16_Weights", "IMAGENET1K_V1"),
    "resnet-50": ("ResNet50_Weights", "IMAGENET1K_V1"),
    "mobilenet-v3": ("MobileNet_V3_Small_Weights", "IMAGENET1K_V1"),
}
TORCHVISION_FILES = {
    "vgg-16": ("vgg16-397923af.pth",),
    "resnet-50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
    "mobilenet-v3": ("mobilenet_v3_small-047dcff4.pth",),
}


MXNET_FILES = {  # base_network -> (MXNet's file, where example/ssd / MXNet's model zoo publish it)
    "vgg-16": (
        "vgg16_reduced-0001.params",
        "https://github.com/zhreshold/mxnet-ssd/releases/download/v0.2-beta/vgg16_reduced.zip",
    ),
    "resnet-50": (
        "resnet-50-0000.params",
        "http://data.mxnet.io/models/imagenet/resnet/50-layers/resnet-50-0000.params",
    ),
}


def search_dirs(settings: RuntimeSettings | None = None) -> list[Path]:
    settings = settings or RuntimeSettings.from_env()
    dirs = [settings.pretrained_dir] if settings.pretrained_dir else []
    return [*dirs, settings.torch_home / "hub" / "checkpoints"]


def _download(base_network: str, settings: RuntimeSettings) -> Path | None:
    """torchvision's ImageNet file for `base_network`, fetched into the hub cache through
    its weights API; None when downloads are off or fail (no network)."""
    if settings.no_download or base_network not in TORCHVISION_WEIGHTS:
        return None
    import torchvision.models as models

    enum, member = TORCHVISION_WEIGHTS[base_network]
    weights = getattr(getattr(models, enum), member)
    try:
        weights.get_state_dict(progress=False, check_hash=True)
    except Exception:  # offline, a proxy refusing, a bad hash: fall back to the clear error
        return None
    cached = search_dirs(settings)[-1] / Path(weights.url).name
    return cached if cached.is_file() else None


def find_weights(base_network: str, settings: RuntimeSettings | None = None) -> Path:
    """The weights file for `base_network` (see the module docstring); `settings`: the
    environment's unless given."""
    if base_network not in TORCHVISION_WEIGHTS:
        raise UserError(
            f"{base_network} has no ImageNet weights (it is sdod's own network): set "
            "use_pretrained_model=0 to train it from scratch"
        )
    settings = settings or RuntimeSettings.from_env()
    names = [
        *TORCHVISION_FILES.get(base_network, ()),
        f"{base_network}.safetensors",
        f"{base_network}.pth",
    ]
    for folder in search_dirs(settings):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    downloaded = _download(base_network, settings)
    if downloaded is not None:
        return downloaded
    where = " or ".join(str(d) for d in search_dirs(settings))
    raise UserError(
        f"use_pretrained_model=1 needs ImageNet weights for {base_network}, none are on this "
        f"machine and they could not be downloaded: put {names[0]} (torchvision's file) in "
        f"{where}, or set SDOD_PRETRAINED_DIR to the folder holding it; or set "
        "use_pretrained_model=0 to train from scratch"
    )


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torchvision .pth (loaded with weights_only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: not a loadable weights file ({exc})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict of tensors")
    return state


def mxnet_backbone(
    base_network: str, settings: RuntimeSettings | None = None
) -> tuple[dict[str, np.ndarray], str]:
    """ImageNet weights for SageMaker's `base_network` under MXNet's parameter names, and
    where they came from (see the module docstring)."""
    from sdod.model.mxnet_params import read_params

    settings = settings or RuntimeSettings.from_env()
    name, url = MXNET_FILES[base_network]
    for folder in search_dirs(settings):
        if (folder / name).is_file():
            return read_params(folder / name), str(folder / name)
    where = " or ".join(str(d) for d in search_dirs(settings))
    advice = (
        f"put MXNet's {name} (from {url}) in {where} (or set SDOD_PRETRAINED_DIR to its "
        "folder), or set use_pretrained_model=0 to train from scratch"
    )
    if base_network != "vgg-16":
        raise UserError(
            f"use_pretrained_model=1 needs the ImageNet weights SageMaker's {base_network} "
            f"starts from: {advice}"
        )
    from sdod.model.sagemaker_layout import vgg16_reduced_from_torchvision

    try:
        path = find_weights(base_network, settings)
    except UserError:
        raise UserError(
            f"use_pretrained_model=1 needs ImageNet weights for vgg-16: {advice}; or put "
            f"torchvision's {TORCHVISION_FILES['vgg-16'][0]} there"
        ) from None
    return vgg16_reduced_from_torchvision(load_weights(path)), f"{path} (torchvision's VGG-16)"

"""ImageNet weights for `use_pretrained_model=1` (SageMaker's default).

Looked for, in order: `$SDOD_PRETRAINED_DIR`, then torchvision's cache
(`$TORCH_HOME/hub/checkpoints`, default `~/.cache/torch/hub/checkpoints`), under
torchvision's file names, or `<base_network>.safetensors` / `<base_network>.pth`. When none
is there, torchvision's weights API downloads its file into that cache (checking its hash),
unless `SDOD_NO_DOWNLOAD=1` (the tests set it) or the machine cannot reach the network:
then one error says which file to put where.
"""

from __future__ import annotations

from pathlib import Path

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

"""The network a training job starts from: an earlier model (the `model` channel,
incremental training), torchvision's ImageNet weights (`use_pretrained_model=1`) or a
random initialisation (reproducible with `SDOD_SEED`); then `freeze_layer_pattern`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sdod.artifact import ModelConfig
from sdod.config import TrainingJobSpec
from sdod.errors import UserError
from sdod.hyperparameters import Hyperparameters
from sdod.joblayout import JobLayout
from sdod.settings import RuntimeSettings


def incremental_weights(
    layout: JobLayout, spec: TrainingJobSpec, hp: Hyperparameters
) -> tuple[dict[str, torch.Tensor], Path, ModelConfig] | None:
    """Weights of the earlier model.tar.gz in the `model` channel (incremental training), its
    path and model config (a SageMaker archive is converted: sdod/model/sagemaker.py), or
    None without one. Its base_network and num_classes must equal this job's."""
    channel = spec.channel("model")
    if channel is None:
        return None
    folder = layout.channel_dir(channel.name)
    archives = sorted(folder.rglob("*.tar.gz")) if folder.is_dir() else []
    if len(archives) != 1:
        raise UserError(
            f"channel model: expected one model.tar.gz in {folder}, found {len(archives)}; "
            "point the model channel's S3Uri at the earlier job's output/model.tar.gz"
        )
    from safetensors.torch import load

    from sdod.artifact import read_artifact

    artifact = read_artifact(archives[0])
    theirs_config = artifact.model_config
    for name, ours in (("base_network", hp.base_network), ("num_classes", hp.num_classes)):
        theirs = getattr(theirs_config, name)
        if theirs != ours:
            raise UserError(
                f"channel model: {archives[0].name} was trained with {name}={theirs}, but this "
                f"job's hyperparameters say {name}={ours}; incremental training needs the same "
                "base_network and num_classes (train from scratch to change them)"
            )
    return load(artifact.weights), archives[0], theirs_config


def initial_model(
    layout: JobLayout,
    spec: TrainingJobSpec,
    hp: Hyperparameters,
    log: Callable[[str], None],
    settings: RuntimeSettings,
) -> Any:
    """The SSD to train (on the CPU; DDP gives every rank rank 0's weights)."""
    base = incremental_weights(layout, spec, hp)
    weights = None
    if hp.use_pretrained_model and base is None:  # a model channel's weights replace them
        from sdod.model.pretrained import find_weights, load_weights

        weights = load_weights(find_weights(hp.base_network, settings))
    if settings.seed is not None:  # reproducible initial weights; else each run draws its own
        torch.manual_seed(settings.seed)
    theirs = base[2] if base is not None else None  # an imported model keeps its layout
    shape = ModelConfig(
        hp.base_network,
        hp.num_classes,
        hp.image_shape,
        nms_threshold=hp.nms_threshold,  # a SageMaker graph's decoding takes this job's
        variant=theirs.variant if theirs else "",
        network=theirs.network if theirs else None,
    )
    model = shape.build(backbone_weights=weights)
    if base is not None:
        state, archive, _ = base
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(
                f"channel model: the weights in {archive} do not fit {hp.base_network} ({exc})"
            ) from None
        log(f"incremental training: starting from the weights in {archive}")
    if hp.freeze_layer_pattern:
        try:
            log(f"frozen layers: {', '.join(model.freeze(hp.freeze_layer_pattern))}")
        except ValueError as exc:
            raise UserError(str(exc)) from None
    return model

"""The network a training job starts from: an earlier model (the `model` channel,
incremental training, in its own layout), or a new one: for `vgg-16`/`resnet-50`
SageMaker's network (`sdod/model/sagemaker_layout.py`) with MXNet's ImageNet weights
(`use_pretrained_model=1`), for sdod's own networks theirs with torchvision's; random parts
reproducible with `SDOD_SEED`; then `freeze_layer_pattern`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sdod.artifact import ModelConfig
from sdod.errors import UserError
from sdod.hyperparameters import Hyperparameters
from sdod.joblayout import JobLayout
from sdod.jobspec import TrainingJobSpec
from sdod.model.networks import build_network
from sdod.model.sagemaker_symbol import NETWORKS as SAGEMAKER_NETWORKS
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
    if settings.seed is not None:  # reproducible initial weights; else each run draws its own
        torch.manual_seed(settings.seed)
    if base is None and hp.base_network in SAGEMAKER_NETWORKS:
        model = _sagemaker_layout(hp, log, settings)
    else:
        model = _other_network(hp, base, settings)
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


def _sagemaker_layout(
    hp: Hyperparameters, log: Callable[[str], None], settings: RuntimeSettings
) -> Any:
    """SageMaker's network for vgg-16/resnet-50, initialised as example/ssd initialises it,
    its base network from ImageNet with use_pretrained_model=1."""
    from sdod.model.sagemaker_layout import initialise, layout_network, load_backbone

    network = layout_network(
        hp.base_network, hp.num_classes, hp.image_shape, hp.nms_threshold, hp.nms_topk
    )
    config = ModelConfig(
        hp.base_network,
        hp.num_classes,
        hp.image_shape,
        nms_threshold=hp.nms_threshold,
        variant="sagemaker",
        network=network,
        nms_topk=hp.nms_topk,
    )
    model = build_network(config)
    initialise(model)
    if hp.use_pretrained_model:
        from sdod.model.pretrained import mxnet_backbone

        arrays, source = mxnet_backbone(hp.base_network, settings)
        count = load_backbone(model, arrays, source)
        log(f"pretrained: {count} base-network tensors from {source}")
    return model


def _other_network(
    hp: Hyperparameters,
    base: tuple[dict[str, torch.Tensor], Path, ModelConfig] | None,
    settings: RuntimeSettings,
) -> Any:
    """sdod's own networks, and an earlier model's layout (incremental training)."""
    weights = None
    if hp.use_pretrained_model and base is None:  # a model channel's weights replace them
        from sdod.model.pretrained import find_weights, load_weights

        weights = load_weights(find_weights(hp.base_network, settings))
    theirs = base[2] if base is not None else None  # an earlier model keeps its layout
    shape = ModelConfig(
        hp.base_network,
        hp.num_classes,
        hp.image_shape,
        nms_threshold=hp.nms_threshold,  # a SageMaker graph's decoding takes this job's
        variant=theirs.variant if theirs else "",
        network=theirs.network if theirs else None,
        nms_topk=hp.nms_topk,
    )
    return build_network(shape, backbone_weights=weights)

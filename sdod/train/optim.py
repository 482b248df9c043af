"""Optimiser and learning-rate schedule from the hyperparameters.

- No weight decay on normalisation layers and biases (NVIDIA's SSD recipe).
- `weight_decay` applies to sgd and rmsprop only, `momentum` to sgd only (SageMaker's docs).
- Linear warm-up over the first iterations (training from scratch diverges without it),
  then the learning rate is multiplied by `lr_scheduler_factor` at each epoch listed in
  `lr_scheduler_step`.
"""

from __future__ import annotations

import bisect

import torch
from torch import nn

from sdod.hyperparameters import Hyperparameters


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            is_norm = isinstance(
                module, nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm
            )
            (no_decay if is_norm or name == "bias" or param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, hp: Hyperparameters) -> torch.optim.Optimizer:
    """SageMaker's `optimizer` over `model`'s parameters (build it once the model is on its
    device): on a GPU, sgd and adam take torch's fused kernels (one launch per step for all
    parameters); rmsprop and adadelta, and every optimiser on a CPU, its defaults."""
    params = list(model.parameters())
    fused = bool(params) and all(p.is_cuda for p in params)
    if hp.optimizer == "sgd":
        return torch.optim.SGD(
            param_groups(model, hp.weight_decay),
            lr=hp.learning_rate,
            momentum=hp.momentum,
            fused=fused or None,
        )
    if hp.optimizer == "rmsprop":
        return torch.optim.RMSprop(param_groups(model, hp.weight_decay), lr=hp.learning_rate)
    if hp.optimizer == "adam":
        return torch.optim.Adam(param_groups(model, 0.0), lr=hp.learning_rate, fused=fused or None)
    return torch.optim.Adadelta(param_groups(model, 0.0), lr=hp.learning_rate)


class Schedule:
    """lr(iteration): warm-up, then step decay at epoch boundaries."""

    def __init__(self, hp: Hyperparameters, iters_per_epoch: int, warmup_iters: int) -> None:
        self.base = hp.learning_rate
        self.factor = hp.lr_scheduler_factor
        self.steps = [s * iters_per_epoch for s in hp.lr_scheduler_step]
        self.warmup = max(0, warmup_iters)

    def __call__(self, iteration: int) -> float:
        lr = self.base * self.factor ** bisect.bisect_right(self.steps, iteration)
        if iteration < self.warmup:
            lr *= (iteration + 1) / self.warmup
        return lr

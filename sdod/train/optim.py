"""Optimiser and learning-rate schedule from the hyperparameters, as SageMaker's algorithm
(MXNet 1.x's `example/ssd`, `train/train_net.py`) runs them.

- The optimisers step as MXNet 1.x's `sgd`, `adam`, `rmsprop`, `adadelta` do, to float32
  rounding (`sdod/train/mxnet_optim.py`; proven against numbers the real MXNet 1.9.1 wrote,
  `tests/fixtures/mxnet/optimizers/`), with MXNet's defaults for what SageMaker does not
  set (adam b1 0.9, b2 0.999, eps 1e-8; rmsprop gamma1 0.9, eps 1e-8; adadelta rho 0.9,
  eps 1e-5, and no learning rate).
- `weight_decay` applies to sgd and rmsprop only, `momentum` to sgd only (SageMaker's docs),
  with MXNet's per-name multipliers: decay on `_weight` and `_gamma` (BatchNorm scale) only,
  0.1× on the L2-normalisation scale, and the box and class predictors' biases learning at
  2× (example/ssd's symbol attributes).
- `rescale_grad` is 1: train_net sets `1 / len(ctx)` over gradients summed across a
  machine's GPUs; DDP already averages them. `clip_gradient` is None, as train_net's.
- The rate is multiplied by `lr_scheduler_factor` at each epoch listed in
  `lr_scheduler_step`: MXNet's `MultiFactorScheduler` (update `n`, counted from 1, takes the
  factor once per step `s < n`; `Schedule(i)` is its rate at `n = i + 1`).

Where sdod chooses otherwise: a linear warm-up over the first iterations (at most
`loop.MAX_WARMUP_ITERS`; SageMaker starts from ImageNet weights, and SSD from random
initialisation diverges without it: loss 88 -> 1.6e7 at lr 1e-3, momentum 0.9), and the
loop clips the gradient norm at `loop.GRAD_CLIP_NORM` before each step for the same reason.
Adadelta has no rate, so neither its warm-up nor its schedule changes anything.
"""

from __future__ import annotations

import bisect

from torch import nn

from sdod.hyperparameters import Hyperparameters
from sdod.train.mxnet_optim import (
    SGD,
    AdaDelta,
    Adam,
    MXNetOptimizer,
    RMSProp,
    mxnet_multipliers,
)

DECAYED = ("sgd", "rmsprop")  # SageMaker: weight_decay is ignored for the other optimisers


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainable parameters in groups of one (lr_mult, wd_mult) by MXNet's name rule,
    each group's `weight_decay` being `weight_decay * wd_mult`."""
    groups: dict[tuple[float, float], dict] = {}
    for _, param, lr_mult, wd_mult in mxnet_multipliers(model):
        group = groups.setdefault(
            (lr_mult, wd_mult),
            {"params": [], "lr_mult": lr_mult, "weight_decay": weight_decay * wd_mult},
        )
        group["params"].append(param)
    return list(groups.values())


def make_optimizer(model: nn.Module, hp: Hyperparameters) -> MXNetOptimizer:
    """SageMaker's `optimizer` over `model`'s trainable parameters, stepping as MXNet 1.x's
    (multi-tensor `_foreach` kernels on any device)."""
    groups = param_groups(model, hp.weight_decay if hp.optimizer in DECAYED else 0.0)
    if hp.optimizer == "sgd":
        return SGD(groups, lr=hp.learning_rate, momentum=hp.momentum)
    if hp.optimizer == "rmsprop":
        return RMSProp(groups, lr=hp.learning_rate)
    if hp.optimizer == "adam":
        return Adam(groups, lr=hp.learning_rate)
    return AdaDelta(groups, lr=hp.learning_rate)


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

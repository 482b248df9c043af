"""MXNet 1.x's `sgd`, `adam`, `rmsprop` and `adadelta` updates as torch optimisers.

Each step follows MXNet 1.9.1's kernels (`src/operator/optimizer_op-inl.h` and
`python/mxnet/optimizer/optimizer.py`) with its float32 scalars, over torch's multi-tensor
(`_foreach_*`) ops on any device: sgd's weights equal MXNet's bit for bit, the others' to
float32 rounding (torch's vectorised CPU sqrt is not always correctly rounded). Per group:
`lr` (the loop sets it every iteration), `lr_mult` (so the rate is `lr * lr_mult`),
`weight_decay` (MXNet's `wd * wd_mult`), `rescale_grad`, `clip_gradient` (None: no
clipping; else each element into ±value).
With `g = rescale_grad * grad` (clipped where marked `clip`):

- sgd: `mom = momentum * mom - lr * wd * w - lr * clip(g)`, `w += mom` (the rate lives in
  `mom`, so a changed rate applies to new gradients only; no momentum: `mom` starts at 0
  every step). torch's SGD keeps the rate out of its buffer.
- adam: `g' = clip(g + wd * w)`, `m = b1 m + (1 - b1) g'`, `v = b2 v + (1 - b2) g'^2`,
  `w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`: epsilon is added to the
  uncorrected root (torch adds it after the correction). b1 0.9, b2 0.999, eps 1e-8.
- rmsprop (Tieleman & Hinton, MXNet's `centered=False`): `g' = clip(g + wd * w)`,
  `n = (1 - gamma1) g'^2 + gamma1 n`, `w -= lr * g' / sqrt(n + eps)`; gamma1 0.9, eps 1e-8
  (torch: alpha 0.99 and eps outside the root).
- adadelta: `g = clip(g)`, `acc_g = rho acc_g + (1 - rho) g^2`,
  `d = sqrt(acc_delta + eps) / sqrt(acc_g + eps) * g`, `acc_delta = rho acc_delta +
  (1 - rho) d^2`, `w -= d + wd * w`; rho 0.9, eps 1e-5. No learning rate at all (torch
  multiplies `d` by it).

`mxnet_multipliers` names each parameter as MXNet would and gives it MXNet's multipliers:
weight decay only on names ending `_weight` or `_gamma`, the symbol's `__lr_mult__` /
`__wd_mult__` on top (example/ssd: predictor biases learn at 2×, the L2-normalisation scale
decays at 0.1×). A SageMaker graph (`GraphNet`) carries its own names and attributes; a
torch-built network is named by role (see `_role`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from sdod.errors import DataError

Tensors = list[torch.Tensor] | tuple[torch.Tensor, ...]  # what the _foreach ops take
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
CONVS = (nn.modules.conv._ConvNd, nn.Linear)
HEADS = ("class_heads", "box_heads")  # sdod's SSD predictors: example/ssd's *_pred_conv


def _f32(x: float) -> float:
    """`x` rounded to float32, as MXNet's kernels take their scalar arguments."""
    return float(np.float32(x))


class MXNetOptimizer(torch.optim.Optimizer):
    """Shared parts: defaults, the per-group loop, refusal of foreign optimiser state."""

    def __init__(self, params: Iterable[Any], lr: float, **defaults: Any) -> None:
        base = {"lr": lr, "lr_mult": 1.0, "weight_decay": 0.0, "rescale_grad": 1.0}
        super().__init__(params, {**base, "clip_gradient": None, **defaults})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update(group, params, [p.grad for p in params])
        return loss

    def _update(self, group: dict, params: Tensors, grads: Tensors) -> None:
        raise NotImplementedError

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = [len(g["params"]) for g in state_dict.get("param_groups", [])]
        mine = [len(g["params"]) for g in self.param_groups]
        if saved != mine:
            raise DataError(
                f"the saved optimiser state has parameter groups of {saved} tensors, this "
                f"{type(self).__name__} {mine} (written by an older sdod or for another "
                "network); delete the checkpoint to start over",
                rule="checkpoint_optimizer",
            )
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # keys a state from an older sdod may lack
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    def _buffers(self, params: Tensors, *names: str) -> list[Tensors]:
        """Per-parameter state tensors (zeros the first time), one list per name."""
        for p in params:
            state = self.state[p]
            for name in names:
                if name not in state:
                    state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return [[self.state[p][name] for p in params] for name in names]


def _rescaled(
    group: dict, grads: Tensors, params: Tensors | None = None, wd: float = 0.0
) -> Tensors:
    """`clip(rescale_grad * grad + wd * w)` (`params` given) or `clip(rescale_grad * grad)`;
    the gradients themselves when there is nothing to do."""
    rescale, clip = _f32(group["rescale_grad"]), group["clip_gradient"]
    wd = _f32(wd) if params is not None else 0.0
    if rescale == 1.0 and wd == 0.0 and clip is None:
        return grads
    out = torch._foreach_mul(grads, rescale)
    if wd != 0.0 and params is not None:
        torch._foreach_add_(out, params, alpha=wd)
    if clip is not None:
        torch._foreach_clamp_min_(out, -_f32(clip))
        torch._foreach_clamp_max_(out, _f32(clip))
    return out


class SGD(MXNetOptimizer):
    """MXNet's `sgd` (see the module docstring); SageMaker's momentum defaults to 0.9."""

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.0) -> None:
        super().__init__(params, lr, momentum=momentum)

    def _update(self, group: dict, params: Tensors, grads: Tensors) -> None:
        # products and differences one by one, in the kernel's order: float32 results equal
        # MXNet's bit for bit (a fused multiply-add would round once where MXNet rounds twice)
        lr = _f32(group["lr"] * group["lr_mult"])
        lr_wd = _f32(lr * _f32(group["weight_decay"]))
        if group["clip_gradient"] is None:
            step = torch._foreach_mul(grads, _f32(lr * _f32(group["rescale_grad"])))
        else:  # clip(rescale * grad), then the rate
            step = torch._foreach_mul(_rescaled(group, grads), lr)
        if group["momentum"] == 0.0:  # mom = -lr*wd*w - lr*g, from nothing
            if lr_wd != 0.0:
                update = torch._foreach_mul(params, -lr_wd)
                torch._foreach_sub_(update, step)
                torch._foreach_add_(params, update)
            else:
                torch._foreach_sub_(params, step)
            return
        (mom,) = self._buffers(params, "mom")
        torch._foreach_mul_(mom, _f32(group["momentum"]))
        if lr_wd != 0.0:
            torch._foreach_sub_(mom, torch._foreach_mul(params, lr_wd))
        torch._foreach_sub_(mom, step)
        torch._foreach_add_(params, mom)


class Adam(MXNetOptimizer):
    """MXNet's `adam` (see the module docstring)."""

    def __init__(
        self, params: Iterable[Any], lr: float, betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:  # fmt: skip
        super().__init__(params, lr, betas=betas, eps=eps)

    def _update(self, group: dict, params: Tensors, grads: Tensors) -> None:
        beta1, beta2 = (_f32(b) for b in group["betas"])
        g = _rescaled(group, grads, params, group["weight_decay"])
        m, v = self._buffers(params, "exp_avg", "exp_avg_sq")
        rates = []
        for p in params:  # the step count is each parameter's own, as MXNet's
            state = self.state[p]
            t = state["step"] = int(state.get("step", 0)) + 1
            coef1, coef2 = 1.0 - group["betas"][0] ** t, 1.0 - group["betas"][1] ** t
            rates.append(-_f32(group["lr"] * group["lr_mult"] * (math.sqrt(coef2) / coef1)))
        torch._foreach_mul_(m, beta1)
        torch._foreach_add_(m, g, alpha=_f32(1.0 - beta1))
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, value=_f32(1.0 - beta2))
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, _f32(group["eps"]))
        torch._foreach_addcdiv_(params, m, denom, rates)


class RMSProp(MXNetOptimizer):
    """MXNet's non-centred `rmsprop` (see the module docstring)."""

    def __init__(
        self, params: Iterable[Any], lr: float, gamma1: float = 0.9, eps: float = 1e-8
    ) -> None:
        super().__init__(params, lr, gamma1=gamma1, eps=eps)

    def _update(self, group: dict, params: Tensors, grads: Tensors) -> None:
        gamma1 = _f32(group["gamma1"])
        g = _rescaled(group, grads, params, group["weight_decay"])
        (n,) = self._buffers(params, "square_avg")
        torch._foreach_mul_(n, gamma1)
        torch._foreach_addcmul_(n, g, g, value=_f32(1.0 - gamma1))
        denom = torch._foreach_add(n, _f32(group["eps"]))
        torch._foreach_sqrt_(denom)
        torch._foreach_addcdiv_(params, g, denom, value=-_f32(group["lr"] * group["lr_mult"]))


class AdaDelta(MXNetOptimizer):
    """MXNet's `adadelta` (see the module docstring): `lr` is kept, for the loop, and unused."""

    def __init__(
        self, params: Iterable[Any], lr: float, rho: float = 0.9, eps: float = 1e-5
    ) -> None:
        super().__init__(params, lr, rho=rho, eps=eps)

    def _update(self, group: dict, params: Tensors, grads: Tensors) -> None:
        rho, rest, eps = _f32(group["rho"]), _f32(1.0 - group["rho"]), _f32(group["eps"])
        g = _rescaled(group, grads)
        acc_g, acc_delta = self._buffers(params, "square_avg", "acc_delta")
        torch._foreach_mul_(acc_g, rho)
        torch._foreach_addcmul_(acc_g, g, g, value=rest)
        delta = torch._foreach_add(acc_delta, eps)
        torch._foreach_sqrt_(delta)
        root_g = torch._foreach_add(acc_g, eps)
        torch._foreach_sqrt_(root_g)
        torch._foreach_div_(delta, root_g)
        torch._foreach_mul_(delta, g)
        torch._foreach_mul_(acc_delta, rho)
        torch._foreach_addcmul_(acc_delta, delta, delta, value=rest)
        wd = _f32(group["weight_decay"])
        if wd != 0.0:
            torch._foreach_add_(delta, params, alpha=wd)
        torch._foreach_sub_(params, delta)


def _role(path: str, module: nn.Module, name: str) -> tuple[str, dict[str, str]]:
    """An MXNet name and symbol attributes for a parameter of a torch-built network:
    convolution/linear `_weight`/`_bias` (a predictor's bias, under `HEADS`, learns at 2×),
    normalisation `_gamma`/`_beta`, a parameter named `*scale*` the L2-normalisation
    `_scale` (decay 0.1×), anything else its own name."""
    stem = path.replace(".", "_") or "net"
    if isinstance(module, NORMS):
        return f"{stem}_{ {'weight': 'gamma', 'bias': 'beta'}.get(name, name) }", {}
    if isinstance(module, CONVS):
        head = name == "bias" and any(part in HEADS for part in path.split("."))
        return f"{stem}_{name}", {"__lr_mult__": "2.0"} if head else {}
    if "scale" in name:
        return f"{stem}_scale", {"__wd_mult__": "0.1"}
    return f"{stem}_{name}", {}


def _graph_names(model: nn.Module) -> dict[int, tuple[str, dict[str, str]]]:
    """id(tensor) -> (parameter node name, its attributes) for SageMaker graphs in `model`."""
    from sdod.model.sagemaker_net import GraphNet

    out: dict[int, tuple[str, dict[str, str]]] = {}
    for module in model.modules():
        if isinstance(module, GraphNet):
            nodes = {node.name: node for node in module.graph.nodes}
            for name, kind in module.graph.params.items():
                if kind == "arg" and name in module.targets:
                    out[id(module.tensor(name))] = (name, dict(nodes[name].attrs))
    return out


def mxnet_multipliers(model: nn.Module) -> list[tuple[str, nn.Parameter, float, float]]:
    """(MXNet name, parameter, lr_mult, wd_mult) for each trainable parameter, in
    `model.parameters()` order, by MXNet's rule (see the module docstring)."""
    graph = _graph_names(model)
    out, seen = [], set()
    for path, module in model.named_modules():
        for name, param in module.named_parameters(prefix=path, recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            local = name.rsplit(".", 1)[-1]
            mx_name, attrs = graph.get(id(param)) or _role(path, module, local)
            wd_mult = 1.0 if mx_name.endswith(("_weight", "_gamma")) else 0.0
            wd_mult = float(attrs.get("__wd_mult__", wd_mult))
            out.append((mx_name, param, float(attrs.get("__lr_mult__", 1.0)), wd_mult))
    return out

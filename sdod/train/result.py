"""What a fit has done so far: epochs, the best validation mAP and its weights, the
history. The training loop returns it and every checkpoint carries it, so a resumed job
continues from exactly what the interrupted one had."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# the fields a checkpoint keeps (the rest say how this process's run ended)
DURABLE = ("best_map", "best_epoch", "best_state", "history")


@dataclass
class FitResult:
    epochs_completed: int
    stopped: bool = False
    stop_reason: str = ""
    best_map: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    early_stopped_at: int | None = None  # the epoch after which early stopping ended it

    def durable(self) -> dict:
        """The fields a checkpoint keeps, as plain containers (`torch.load(weights_only=True)`
        reads them back)."""
        return {name: getattr(self, name) for name in DURABLE}

    @classmethod
    def resumed(cls, epochs_completed: int, durable: dict) -> FitResult:
        return cls(epochs_completed, **{name: durable[name] for name in DURABLE})

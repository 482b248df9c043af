"""Checkpoints: one file per job, rewritten atomically after every epoch, synced to
`CheckpointConfig.S3Uri` when the spec has one. A rerun of the same job resumes from it
(epoch counter, optimizer state, best-so-far weights, history, RNG) instead of starting over.

The file is written with `torch.save` and read with `weights_only=True`: tensors and plain
containers only, nothing is unpickled beyond that.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdod.errors import DataError
from sdod.faults import pause_point
from sdod.train.result import FitResult

FORMAT = 1
NAME = "checkpoint.pt"


@dataclass
class Checkpoint:
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    result: FitResult  # epochs completed, best-so-far weights and mAP, history
    torch_rng: torch.Tensor
    job: str = ""  # the TrainingJobName that wrote it ("" in checkpoints older than this)
    hyperparameters: dict[str, str] = field(default_factory=dict)  # that job's, as strings

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return self.result.epochs_completed


def save(path: Path, ckpt: Checkpoint) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "epoch": ckpt.epoch,
        "model": ckpt.model,
        "optimizer": ckpt.optimizer,
        "torch_rng": ckpt.torch_rng,
        "job": ckpt.job,
        "hyperparameters": dict(ckpt.hyperparameters),
        **ckpt.result.durable(),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        pause_point("checkpoint")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: Path) -> Checkpoint:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(
            f"{path}: not a readable sdod checkpoint ({exc}); delete it to start over"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(
            f"{path}: not an sdod checkpoint of format {FORMAT}; delete it to start over"
        )
    return Checkpoint(
        payload["model"],
        payload["optimizer"],
        FitResult.resumed(payload["epoch"], payload),
        payload["torch_rng"],
        str(payload.get("job", "")),
        {str(k): str(v) for k, v in (payload.get("hyperparameters") or {}).items()},
    )


def check_identity(
    ckpt: Checkpoint, *, job: str, hyperparameters: dict[str, str], where: str
) -> None:
    """Refuse (DataError) to resume a checkpoint another job wrote, or this job's name with
    other hyperparameters: its weights and optimiser state belong to that training run."""
    fix = (
        "give this job a new TrainingJobName (or CheckpointConfig.S3Uri), or delete the "
        "checkpoint to start over"
    )
    if ckpt.job and ckpt.job != job:
        raise DataError(
            f"checkpoint {where} was written by training job {ckpt.job!r}, not {job!r}; "
            f"refusing to resume it: {fix}",
            rule="checkpoint_job",
            where=where,
        )
    # keys the checkpoint lacks are hyperparameters newer than the sdod that wrote it
    keys = sorted(set(ckpt.hyperparameters) & set(hyperparameters))
    changed = [
        f"{k}: {ckpt.hyperparameters[k]} -> {hyperparameters[k]}"
        for k in keys
        if ckpt.hyperparameters[k] != hyperparameters[k]
    ]
    if changed:
        raise DataError(
            f"checkpoint {where} of job {job!r} was trained with other hyperparameters "
            f"({'; '.join(changed)}); refusing to resume it: {fix}",
            rule="checkpoint_hyperparameters",
            where=where,
        )

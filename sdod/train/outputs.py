"""A training job's outputs: the model (`model.tar.gz` and `output/metrics.json`) and its
delivery to `S3OutputPath/<job>/output/`, or the failure reason beside it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdod.artifact import Artifact, ModelConfig, weights_bytes, write_artifact, write_artifact_files
from sdod.data.sample import SampleSet
from sdod.errors import UserError
from sdod.hyperparameters import Hyperparameters
from sdod.joblayout import JobLayout
from sdod.jobspec import TrainingJobSpec
from sdod.storage import atomic_write_bytes


@dataclass
class JobOutcome:
    status: str
    exit_code: int
    job_root: str
    artifact: str | None = None  # the local model.tar.gz
    metrics: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    model_uri: str | None = None  # S3OutputPath/<job>/output/model.tar.gz once uploaded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_model(
    layout: JobLayout,
    spec: TrainingJobSpec,
    hp: Hyperparameters,
    model: Any,
    best_state: dict[str, torch.Tensor],
    train: SampleSet,
    metrics: dict[str, Any],
) -> Path:
    """model.tar.gz (in a SageMaker container: its files unpacked, SageMaker tars them) and
    `output/metrics.json`."""
    artifact = Artifact(
        weights=weights_bytes(best_state),
        hyperparams=hp.to_strings(),
        config=ModelConfig(
            hp.base_network,
            hp.num_classes,
            hp.image_shape,
            tuple(_class_names(train, hp.num_classes)),
            hp.nms_threshold,
            int(model.anchors.shape[0]),
            model.config.variant,
            network=getattr(model, "network", None),  # a SageMaker graph (sdod/model/sagemaker.py)
            nms_topk=hp.nms_topk,
        ).to_dict(),
        metrics=metrics,
    )
    path = (
        write_artifact_files(layout.model_dir, artifact)
        if spec.container
        else write_artifact(layout.model_dir / "model.tar.gz", artifact)
    )
    atomic_write_bytes(layout.output_dir / "metrics.json", json.dumps(metrics, indent=2).encode())
    return path


def _class_names(data: SampleSet, num_classes: int) -> list[str]:
    return [data.categories.get(c, f"class_{c}") for c in range(num_classes)]


def upload_failure(spec: TrainingJobSpec, message: str, log: Callable[[str], None]) -> None:
    """`S3OutputPath/<job>/output/failure`, as SageMaker leaves it (best effort: the job has
    failed already; an unreachable store must not hide why)."""
    from sdod.storage import write_bytes
    from sdod.workspace import output_uris

    if spec.container:  # /opt/ml/output/failure is written already; SageMaker reports it
        return
    uri = output_uris(spec).failure
    try:
        write_bytes(uri, (message + "\n").encode())
    except Exception as exc:
        log(f"sdod train: could not write {uri} ({exc})")


def deliver(spec: TrainingJobSpec, outcome: JobOutcome, log: Callable[[str], None]) -> JobOutcome:
    """Upload the job's model.tar.gz to `S3OutputPath/<job>/output/` (Completed and Stopped
    jobs), or its failure reason beside it. The object appears whole or not at all: one S3
    PUT (a multipart upload is invisible until completed), or a local rename."""
    from sdod.storage import remove, upload_file
    from sdod.workspace import output_uris

    if outcome.status == "Failed":
        upload_failure(spec, outcome.message, log)
        return outcome
    if outcome.artifact is None or spec.container:
        return outcome  # another machine's launcher (rank 0's uploads), or SageMaker uploads
    uris = output_uris(spec)
    try:
        upload_file(outcome.artifact, uris.model)
    except UserError as exc:
        raise RuntimeError(f"the model was trained but could not be uploaded: {exc}") from None
    with contextlib.suppress(Exception):  # an earlier attempt's failure no longer holds
        remove(uris.failure)
    outcome.model_uri = uris.model
    log(f"sdod train: model.tar.gz uploaded to {uris.model}")
    return outcome

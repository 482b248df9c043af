"""A training job's samples: the train and validation channels read from the job root
(under DDP, indexed once per machine and shared through the job root), their labels
checked against the hyperparameters before any training starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sdod.data.channels import read_channel
from sdod.data.sample import SampleSet
from sdod.errors import DataError, UserError
from sdod.hyperparameters import Hyperparameters
from sdod.joblayout import JobLayout
from sdod.jobspec import Channel, TrainingJobSpec
from sdod.train.distributed import World


def shared_channel(
    layout: JobLayout, spec: TrainingJobSpec, channel: Channel, world: World
) -> SampleSet:
    """A channel's samples. Under DDP the machine's first process indexes the channel and
    writes the index (labels and image addresses) to the job root; the other processes on
    the machine load it, so a large `.rec` is scanned once per machine, not once per GPU."""
    if world.size == 1:
        return read_channel(layout, spec, channel)
    from sdod.storage import atomic_write_json

    path = layout.root / "index" / f"{channel.name}.json"
    data, error = None, None
    if world.local_rank == 0:
        path.unlink(missing_ok=True)
        try:
            data = read_channel(layout, spec, channel)
            atomic_write_json(path, data.to_json(), indent=None)
        except Exception as exc:  # the other ranks must still reach the barrier
            error = exc
    world.barrier()
    if error is not None:
        raise error
    if data is not None:
        return data
    if not path.is_file():
        raise UserError(f"channel {channel.name}: this machine's first process could not index it")
    return SampleSet.from_json(json.loads(path.read_text()))


def check_labels(data: SampleSet, hp: Hyperparameters, channel: str) -> None:
    """DataError naming the first image whose class ids or object count the
    hyperparameters (num_classes, label_width) cannot hold."""
    for sample in data.samples:
        if sample.labels.size and int(sample.labels.max()) >= hp.num_classes:
            raise DataError(
                f"channel {channel}, image {sample.key}: class_id "
                f"{int(sample.labels.max())} is not below num_classes={hp.num_classes}; "
                "class ids run from 0 to num_classes-1"
            )
        if sample.num_objects > hp.max_objects:
            raise DataError(
                f"channel {channel}, image {sample.key}: {sample.num_objects} objects, but "
                f"label_width={hp.label_width} fits {hp.max_objects}; "
                f"raise label_width to at least {2 + 5 * sample.num_objects}"
            )


def job_samples(
    layout: JobLayout,
    spec: TrainingJobSpec,
    hp: Hyperparameters,
    world: World,
    log: Callable[[str], None],
) -> tuple[SampleSet, SampleSet]:
    """The train and validation channels' samples, their labels checked."""
    train_channel = spec.channel("train")
    if train_channel is None:
        raise UserError("the job has no 'train' channel")
    train = shared_channel(layout, spec, train_channel, world)
    val_channel = spec.channel("validation")
    validation = shared_channel(layout, spec, val_channel, world) if val_channel else SampleSet([])
    check_labels(train, hp, "train")
    check_labels(validation, hp, "validation")
    if hp.num_training_samples != len(train):
        log(
            f"warning: num_training_samples={hp.num_training_samples} "
            f"but the train channel holds {len(train)} images"
        )
    return train, validation

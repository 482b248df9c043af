"""The typed training-job spec: one frozen `TrainingJobSpec` per CreateTrainingJob request.

The spec keeps the request as sent (`raw`) beside its typed fields and its hyperparameters,
parsed once (`hp`). A stage that hands on a changed request (ingest's snapshot, pack's
RecordIO channels and checkpoints) asks the spec for a new one (`with_channel_uris`,
`with_channels`, `with_checkpoint`) and sends `to_request()`: raw requests are never
edited in place.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from sdod.hyperparameters import Hyperparameters, parse_hyperparameters

# fullmatch, never match: `$` also matches before a trailing newline ("job\n" is no name)
JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
CHANNEL_NAME = re.compile(r"[A-Za-z0-9\.\-_]{1,64}")
MAX_CHANNELS = 20
MAX_HYPERPARAMETERS = 100
MAX_HP_LENGTH = 256
MAX_RUNTIME = 2_419_200  # 28 days: the API's limit for MaxRuntimeInSeconds and MaxWait
CONTENT_TYPES = {
    "application/x-recordio",
    "image/jpeg",
    "image/png",
    "application/x-image",
    "application/jsonlines",
    "application/x-sagemaker-model",
}
KNOWN_CHANNELS = ("train", "validation", "train_annotation", "validation_annotation", "model")
INPUT_MODES = ("File", "Pipe", "FastFile")
STREAMED_MODES = ("Pipe", "FastFile")  # read in place from the object store, never downloaded
COMPRESSION_TYPES = ("None", "Gzip")
USED_FIELDS = {
    "TrainingJobName",
    "HyperParameters",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "CheckpointConfig",
    "Tags",
    "AlgorithmSpecification",  # its TrainingInputMode: the channels' default InputMode
}


@dataclass(frozen=True)
class Channel:
    name: str
    uri: str
    content_type: str | None = None
    input_mode: str = "File"
    attribute_names: tuple[str, ...] = ()
    record_wrapper: str | None = None
    shuffle_seed: int | None = None
    s3_data_type: str = "S3Prefix"
    compression: str = "None"
    distribution: str = "FullyReplicated"  # S3DataDistributionType (see `sharding_note`)

    @property
    def streamed(self) -> bool:
        """Pipe and FastFile channels are read in place, never downloaded whole."""
        return self.input_mode in STREAMED_MODES

    def sharding_note(self, instances: int) -> str | None:
        """How sdod reads a ShardedByS3Key channel (None for FullyReplicated)."""
        if self.distribution != "ShardedByS3Key":
            return None
        return (
            f"channel {self.name}: S3DataDistributionType ShardedByS3Key is read as "
            "FullyReplicated: every machine reads every object, and the distributed sampler "
            f"gives each of the training processes on the {instances} machine(s) its own part "
            "of every batch, so each record is trained on once per epoch, as with shards"
        )

    def to_request(self) -> dict[str, Any]:
        """This channel as a new `InputDataConfig` entry (fields at their default left out)."""
        source: dict[str, Any] = {"S3DataType": self.s3_data_type, "S3Uri": self.uri}
        if self.attribute_names:
            source["AttributeNames"] = list(self.attribute_names)
        if self.distribution != "FullyReplicated":
            source["S3DataDistributionType"] = self.distribution
        entry: dict[str, Any] = {"ChannelName": self.name}
        if self.content_type is not None:
            entry["ContentType"] = self.content_type
        entry["InputMode"] = self.input_mode
        entry["DataSource"] = {"S3DataSource": source}
        if self.compression != "None":
            entry["CompressionType"] = self.compression
        if self.record_wrapper is not None:
            entry["RecordWrapperType"] = self.record_wrapper
        if self.shuffle_seed is not None:
            entry["ShuffleConfig"] = {"Seed": self.shuffle_seed}
        return entry


@dataclass(frozen=True)
class TrainingJobSpec:
    name: str
    hyperparameters: dict[str, str]
    channels: tuple[Channel, ...]
    output_path: str
    instance_count: int = 1
    gpus_per_instance: int | None = None
    max_runtime_seconds: int = 86400
    max_wait_seconds: int | None = None
    checkpoint_uri: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    ignored_fields: tuple[str, ...] = ()
    container: bool = False  # in a SageMaker container: it tars /opt/ml/model and uploads it
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # as sent

    def channel(self, name: str) -> Channel | None:
        return next((c for c in self.channels if c.name == name), None)

    @cached_property
    def hp(self) -> Hyperparameters:
        """The hyperparameters, parsed on first use and kept (UserError names a bad one)."""
        return parse_hyperparameters(self.hyperparameters)

    def to_request(self) -> dict[str, Any]:
        """The CreateTrainingJob request of this spec, as a new dict (for XCom, a file, an API
        call): a changed request is a new spec's (`with_...`), never an edited dict."""
        return copy.deepcopy(self.raw)

    def with_channel_uris(self, uris: Mapping[str, str]) -> TrainingJobSpec:
        """The spec reading the named channels from copies of their data at these prefixes
        (ingest's snapshot): each one's S3Uri changes and a ManifestFile channel becomes an
        S3Prefix one (the copy holds the objects it listed); all else stays as sent."""
        unknown = sorted(set(uris) - {c.name for c in self.channels})
        if unknown:
            raise ValueError(f"job {self.name} has no channel {', '.join(unknown)}")
        request = self.to_request()
        channels = []
        for entry, channel in zip(request["InputDataConfig"], self.channels, strict=True):
            if channel.name in uris:
                source = entry["DataSource"]["S3DataSource"]
                source["S3Uri"] = uris[channel.name]
                if channel.s3_data_type == "ManifestFile":
                    source["S3DataType"] = "S3Prefix"
                kind = "S3Prefix" if channel.s3_data_type == "ManifestFile" else None
                channel = replace(
                    channel, uri=uris[channel.name], s3_data_type=kind or channel.s3_data_type
                )
            channels.append(channel)
        return self._evolve(channels=tuple(channels), raw=request)

    def with_channels(self, channels: Sequence[Channel]) -> TrainingJobSpec:
        """The spec reading `channels` (in this order) instead of its own: a channel this
        spec has, unchanged, keeps its entry as sent; any other gets a new one."""
        request = self.to_request()
        sent = dict(zip((c.name for c in self.channels), request["InputDataConfig"], strict=True))
        request["InputDataConfig"] = [
            sent[c.name] if self.channel(c.name) == c else c.to_request() for c in channels
        ]
        return self._evolve(channels=tuple(channels), raw=request)

    def with_checkpoint(self, uri: str) -> TrainingJobSpec:
        """The spec whose checkpoints go to `uri` (its CheckpointConfig replaced)."""
        request = self.to_request()
        request["CheckpointConfig"] = {"S3Uri": uri}
        return self._evolve(checkpoint_uri=uri, raw=request)

    def _evolve(self, **changes: Any) -> TrainingJobSpec:
        """A copy with `changes`; the parsed hyperparameters go with it when they stay."""
        new = replace(self, **changes)
        if "hp" in self.__dict__ and "hyperparameters" not in changes:
            new.__dict__["hp"] = self.__dict__["hp"]  # what cached_property itself writes
        return new

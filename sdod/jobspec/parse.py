"""Parsing a CreateTrainingJob request into a `TrainingJobSpec`, validated once at the edge.

A spec a user already sends to SageMaker is accepted unchanged; fields sdod has no use for
(`RoleArn`, `VpcConfig`, `AlgorithmSpecification`, ...) are accepted and listed in
`ignored_fields`. Every `S3Uri` / `S3OutputPath` may also be a `file://` URI or a path.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from sdod.errors import UserError
from sdod.jobspec.model import (
    CHANNEL_NAME,
    COMPRESSION_TYPES,
    CONTENT_TYPES,
    INPUT_MODES,
    JOB_NAME,
    MAX_CHANNELS,
    MAX_HP_LENGTH,
    MAX_HYPERPARAMETERS,
    MAX_RUNTIME,
    USED_FIELDS,
    Channel,
    TrainingJobSpec,
)


def _get(
    obj: Any, key: str, where: str, kind: type | tuple[type, ...], required: bool = True
) -> Any:
    if not isinstance(obj, dict):
        raise UserError(f"{where} must be an object")
    if key not in obj:
        if required:
            raise UserError(f"{where}.{key} is required")
        return None
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise UserError(f"{where}.{key} must be a {names}, got {value!r}")
    return value


def _hyperparameters(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError("HyperParameters must be an object of string to string")
    if len(raw) > MAX_HYPERPARAMETERS:
        raise UserError(f"HyperParameters has {len(raw)} entries; at most {MAX_HYPERPARAMETERS}")
    out = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise UserError(
                f"HyperParameters.{key} must be a string (SageMaker sends strings), got {value!r}"
            )
        for what, text in (("key", key), ("value", value)):
            if len(text) > MAX_HP_LENGTH:
                raise UserError(
                    f"HyperParameters {what} {text[:40]!r}... is longer than 256 characters"
                )
        out[key] = value
    return out


def _channel_name(raw: Any, where: str) -> str:
    name: str = _get(raw, "ChannelName", where, str)
    if not CHANNEL_NAME.fullmatch(name):
        raise UserError(f"{where}.ChannelName {name!r} must match [A-Za-z0-9.-_]{{1,64}}")
    if set(name) == {"."}:  # SageMaker's pattern allows it; here it names a folder
        raise UserError(
            f"{where}.ChannelName {name!r} is only dots: it would name the channels' parent "
            f"folder (input/data/{name}); use a name such as 'train' or 'validation'"
        )
    return name


def _compression(raw: Any, where: str, mode: str, data_type: str) -> str:
    compression: str = _get(raw, "CompressionType", where, str, required=False) or "None"
    if compression not in COMPRESSION_TYPES:
        raise UserError(f"{where}.CompressionType {compression!r} must be None or Gzip")
    if compression == "Gzip" and mode == "File":
        raise UserError(
            f"{where}.CompressionType Gzip applies to Pipe mode only (as on SageMaker); "
            "in File mode upload the data uncompressed, or set InputMode to Pipe"
        )
    if compression == "Gzip" and data_type != "AugmentedManifestFile":
        raise UserError(
            f"{where}.CompressionType Gzip: sdod streams RecordIO with ranged reads per record, "
            "which a gzip stream cannot serve; upload the .rec uncompressed (Gzip works for "
            "an augmented manifest)"
        )
    return compression


def _distribution(source: dict[str, Any], where: str) -> str:
    value = _get(source, "S3DataDistributionType", where, str, required=False)
    if value not in (None, "FullyReplicated", "ShardedByS3Key"):
        raise UserError(
            f"{where}.S3DataDistributionType {value!r} must be FullyReplicated or ShardedByS3Key"
        )
    return value or "FullyReplicated"


def _channel(raw: Any, i: int, default_mode: str = "File") -> Channel:
    where = f"InputDataConfig[{i}]"
    name = _channel_name(raw, where)
    source = _get(_get(raw, "DataSource", where, dict), "S3DataSource", f"{where}.DataSource", dict)
    s3_where = f"{where}.DataSource.S3DataSource"
    uri = _get(source, "S3Uri", s3_where, str)
    data_type = _get(source, "S3DataType", s3_where, str, required=False) or "S3Prefix"
    if data_type not in ("S3Prefix", "ManifestFile", "AugmentedManifestFile"):
        raise UserError(
            f"{s3_where}.S3DataType {data_type!r} must be S3Prefix, ManifestFile or "
            "AugmentedManifestFile"
        )
    content_type = _get(raw, "ContentType", where, str, required=False)
    if content_type is not None and content_type not in CONTENT_TYPES:
        raise UserError(
            f"{where}.ContentType {content_type!r} is not one of {sorted(CONTENT_TYPES)}"
        )
    if name == "model" and content_type not in (None, "application/x-sagemaker-model"):
        raise UserError(
            f"{where}: the model channel's ContentType must be application/x-sagemaker-model"
        )
    mode = _get(raw, "InputMode", where, str, required=False) or default_mode
    if mode not in INPUT_MODES:
        raise UserError(f"{where}.InputMode {mode!r} must be one of {', '.join(INPUT_MODES)}")
    if data_type == "ManifestFile" and mode != "File":
        raise UserError(
            f"{where}: S3DataType ManifestFile is read in File mode (the listed objects are "
            "downloaded); set InputMode to File, or use an S3Prefix or AugmentedManifestFile"
        )
    compression = _compression(raw, where, mode, data_type)
    distribution = _distribution(source, s3_where)
    attrs = _get(source, "AttributeNames", s3_where, list, required=False) or []
    shuffle = _get(raw, "ShuffleConfig", where, dict, required=False)
    seed = _get(shuffle, "Seed", f"{where}.ShuffleConfig", int) if shuffle is not None else None
    wrapper = _get(raw, "RecordWrapperType", where, str, required=False)
    return Channel(
        name, uri, content_type, mode, tuple(map(str, attrs)), wrapper, seed, data_type,
        compression, distribution,
    )  # fmt: skip


class _Collector:
    """Runs the checks of one spec section by section: raises the first problem, or (when
    collecting, for `validate-job`) records each and goes on with a default."""

    def __init__(self, collect: bool) -> None:
        self.collect, self.problems = collect, []  # type: ignore[var-annotated]

    def __call__(self, check: Any, *args: Any, default: Any = None) -> Any:
        try:
            return check(*args)
        except UserError as exc:
            if not self.collect:
                raise
            self.problems.append(str(exc))
            return default


def _name(raw: dict[str, Any]) -> str:
    name: str = _get(raw, "TrainingJobName", "spec", str)
    if not JOB_NAME.fullmatch(name):
        raise UserError(
            f"TrainingJobName {name!r} must be 1-63 letters, digits and hyphens, starting and "
            "ending with a letter or digit (pattern ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})"
        )
    return name


def _default_mode(raw: dict[str, Any]) -> str:
    algorithm = _get(raw, "AlgorithmSpecification", "spec", dict, required=False) or {}
    mode = (
        _get(algorithm, "TrainingInputMode", "AlgorithmSpecification", str, required=False)
        or "File"
    )
    if mode not in INPUT_MODES:
        raise UserError(
            f"AlgorithmSpecification.TrainingInputMode {mode!r} must be one of "
            f"{', '.join(INPUT_MODES)}"
        )
    return str(mode)


def _channel_list(raw: dict[str, Any]) -> list[Any]:
    channels: list[Any] = _get(raw, "InputDataConfig", "spec", list)
    if not 1 <= len(channels) <= MAX_CHANNELS:
        raise UserError(
            f"InputDataConfig must list 1 to {MAX_CHANNELS} channels, got {len(channels)}"
        )
    return channels


def _unique(channels: tuple[Channel, ...]) -> None:
    names = [c.name for c in channels]
    if len(set(names)) != len(names):
        raise UserError(f"InputDataConfig lists a channel twice: {names}")


def _output(raw: dict[str, Any]) -> str:
    return str(
        _get(_get(raw, "OutputDataConfig", "spec", dict), "S3OutputPath", "OutputDataConfig", str)
    )


def _resources(raw: dict[str, Any]) -> tuple[int, int | None]:
    resources = _get(raw, "ResourceConfig", "spec", dict, required=False) or {}
    count = _get(resources, "InstanceCount", "ResourceConfig", int, required=False) or 1
    if count < 1:
        raise UserError(f"ResourceConfig.InstanceCount must be >= 1, got {count}")
    gpus = _get(resources, "GpusPerInstance", "ResourceConfig", int, required=False)
    return count, gpus


def _stopping(raw: dict[str, Any]) -> tuple[int | None, int | None]:
    stopping = _get(raw, "StoppingCondition", "spec", dict, required=False) or {}
    max_runtime = _get(stopping, "MaxRuntimeInSeconds", "StoppingCondition", int, required=False)
    max_wait = _get(stopping, "MaxWaitTimeInSeconds", "StoppingCondition", int, required=False)
    for field_name, value in (
        ("MaxRuntimeInSeconds", max_runtime),
        ("MaxWaitTimeInSeconds", max_wait),
    ):
        if value is not None and not 1 <= value <= MAX_RUNTIME:
            raise UserError(
                f"StoppingCondition.{field_name} must be 1 to {MAX_RUNTIME} (28 days), got {value}"
            )
    if max_wait is not None and max_runtime is not None and max_wait < max_runtime:
        raise UserError("StoppingCondition.MaxWaitTimeInSeconds must be >= MaxRuntimeInSeconds")
    return max_runtime, max_wait


def _checkpoint(raw: dict[str, Any]) -> str | None:
    checkpoint = _get(raw, "CheckpointConfig", "spec", dict, required=False)
    return _get(checkpoint, "S3Uri", "CheckpointConfig", str) if checkpoint else None


def _tags(raw: dict[str, Any]) -> dict[str, str]:
    tags_raw = _get(raw, "Tags", "spec", list, required=False) or []
    if len(tags_raw) > 50:
        raise UserError(f"Tags holds {len(tags_raw)} tags; at most 50")
    return {
        _get(t, "Key", f"Tags[{i}]", str): str(_get(t, "Value", f"Tags[{i}]", str))
        for i, t in enumerate(tags_raw)
    }


def _ignored(raw: dict[str, Any]) -> tuple[str, ...]:
    algorithm = raw.get("AlgorithmSpecification")
    sub = algorithm if isinstance(algorithm, dict) else {}
    return tuple(
        sorted(
            (set(raw) - USED_FIELDS)
            | {f"AlgorithmSpecification.{k}" for k in sub if k != "TrainingInputMode"}
        )
    )


def _parse(raw: Any, collect: bool) -> tuple[TrainingJobSpec | None, list[str]]:
    if not isinstance(raw, dict):
        raise UserError("the training-job spec must be a JSON object (CreateTrainingJob request)")
    c = _Collector(collect)
    name = c(_name, raw)
    default_mode = c(_default_mode, raw, default="File")
    channels = tuple(
        ch
        for i, entry in enumerate(c(_channel_list, raw, default=[]))
        if (ch := c(_channel, entry, i, default_mode)) is not None
    )
    c(_unique, channels)
    output = c(_output, raw)
    count, gpus = c(_resources, raw, default=(1, None))
    max_runtime, max_wait = c(_stopping, raw, default=(None, None))
    checkpoint_uri = c(_checkpoint, raw)
    tags = c(_tags, raw, default={})
    hyperparameters = c(_hyperparameters, raw.get("HyperParameters"), default={})
    if c.problems:
        return None, c.problems
    spec = TrainingJobSpec(
        name=name,
        hyperparameters=hyperparameters,
        channels=channels,
        output_path=output,
        instance_count=count,
        gpus_per_instance=gpus,
        max_runtime_seconds=max_runtime or 86400,
        max_wait_seconds=max_wait,
        checkpoint_uri=checkpoint_uri,
        tags=tags,
        ignored_fields=_ignored(raw),
        raw=copy.deepcopy(raw),  # the spec's own: the caller may change theirs
    )
    return spec, []


def parse_job_spec(raw: Any) -> TrainingJobSpec:
    """Validate a CreateTrainingJob-shaped dict; UserError names the first bad field."""
    spec, _ = _parse(raw, collect=False)
    assert spec is not None
    return spec


def check_job_request(raw: Any) -> tuple[TrainingJobSpec | None, list[str]]:
    """Every problem of a CreateTrainingJob request (spec, channels, hyperparameters,
    stopping condition), not just the first; the spec when there are none."""
    from sdod.hyperparameters import hyperparameter_problems

    try:
        spec, problems = _parse(raw, collect=True)
    except UserError as exc:
        return None, [str(exc)]
    hp = raw.get("HyperParameters") if isinstance(raw.get("HyperParameters"), dict) else {}
    problems += hyperparameter_problems(hp)
    return (spec if not problems else None), problems


def load_job_spec(path: str | Path) -> TrainingJobSpec:
    """Read and validate a spec file; errors name the file and the field."""
    from sdod.storage import read_json

    path = Path(path)
    raw = read_json(path, "job spec")
    try:
        return parse_job_spec(raw)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def parse_spec(spec: str | dict[str, Any] | TrainingJobSpec) -> TrainingJobSpec:
    """A validated CreateTrainingJob request from a path, a dict or a parsed spec."""
    if isinstance(spec, TrainingJobSpec):
        return spec
    return parse_job_spec(spec) if isinstance(spec, dict) else load_job_spec(spec)


def checked_spec(request: str | dict[str, Any]) -> TrainingJobSpec:
    """A CreateTrainingJob request (a JSON file or a dict) checked in full: UserError
    listing every problem (`check_job_request`), else the spec."""
    from sdod.storage import read_json

    raw = read_json(request, "job spec") if isinstance(request, str) else request
    spec, problems = check_job_request(raw)
    if spec is None:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise UserError(f"{len(problems)} problem(s) in the training-job request:\n{listed}")
    return spec

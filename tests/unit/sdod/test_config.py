"""The CreateTrainingJob spec: SageMaker's example validates; malformed specs name the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sdod.errors import UserError
from sdod.jobspec import load_job_spec, parse_job_spec

EXAMPLE = Path(__file__).resolve().parents[3] / "include" / "jobs" / "sagemaker-example.json"


def _example() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())


def test_the_sagemaker_documentation_example_validates_unchanged() -> None:
    spec = load_job_spec(EXAMPLE)
    assert spec.name == "object-detection-2026-11-23-10-00-00"
    assert [c.name for c in spec.channels] == ["train", "validation"]
    assert spec.channel("train").content_type == "application/x-recordio"  # type: ignore[union-attr]
    assert spec.hyperparameters["base_network"] == "resnet-50"
    assert spec.max_runtime_seconds == 360000
    assert spec.ignored_fields == ("AlgorithmSpecification.TrainingImage", "RoleArn")


def _set(path: str, value: Any) -> dict[str, Any]:
    spec = _example()
    *parents, last = path.split(".")
    node: Any = spec
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is KeyError:
        del node[int(last) if last.isdigit() else last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return spec


MALFORMED = [
    (_set("TrainingJobName", "bad_name!"), "TrainingJobName 'bad_name!' must be 1-63"),
    (_set("TrainingJobName", "a" * 64), "TrainingJobName 'aaaa"),
    (_set("TrainingJobName", KeyError), r"spec\.TrainingJobName is required"),
    (_set("InputDataConfig", []), "InputDataConfig must list 1 to 20 channels, got 0"),
    (_set("InputDataConfig.1.ChannelName", "train"), "lists a channel twice"),
    (
        _set("InputDataConfig.0.ContentType", "text/csv"),
        r"InputDataConfig\[0\]\.ContentType 'text/csv'",
    ),
    (
        _set("InputDataConfig.0.InputMode", "Streaming"),
        r"InputDataConfig\[0\]\.InputMode 'Streaming'",
    ),
    (
        _set("InputDataConfig.0.DataSource.S3DataSource.S3Uri", KeyError),
        r"S3DataSource\.S3Uri is required",
    ),
    (_set("HyperParameters.epochs", 30), r"HyperParameters\.epochs must be a string"),
    (_set("HyperParameters.num_classes", "9" * 257), "longer than 256 characters"),
    (_set("HyperParameters", {f"k{i}": "v" for i in range(101)}), "101 entries; at most 100"),
    (_set("OutputDataConfig", KeyError), r"spec\.OutputDataConfig is required"),
    (_set("StoppingCondition.MaxRuntimeInSeconds", 0), "MaxRuntimeInSeconds must be 1 to 2419200"),
    (_set("StoppingCondition.MaxRuntimeInSeconds", "1h"), r"MaxRuntimeInSeconds must be a int"),
    (_set("ResourceConfig.InstanceCount", True), "InstanceCount must be a int, got True"),
    (_set("Tags", [{"Key": "team"}]), r"Tags\[0\]\.Value is required"),
]


@pytest.mark.parametrize(("spec", "message"), MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_specs_each_name_their_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_job_spec(copy.deepcopy(spec))


def test_model_channel_needs_the_sagemaker_model_content_type() -> None:
    spec = _example()
    spec["InputDataConfig"].append(
        {"ChannelName": "model", "ContentType": "application/x-recordio",
         "DataSource": {"S3DataSource": {"S3Uri": "s3://b/model/"}}}
    )  # fmt: skip
    with pytest.raises(
        UserError, match="model channel's ContentType must be application/x-sagemaker-model"
    ):
        parse_job_spec(spec)


def test_spec_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "job.json"
    bad.write_text("{")
    with pytest.raises(UserError, match=r"job\.json: not valid JSON"):
        load_job_spec(bad)
    bad.write_text(json.dumps(_set("TrainingJobName", "x_y")))
    with pytest.raises(UserError, match=r"job\.json: TrainingJobName 'x_y'"):
        load_job_spec(bad)


def _spec_with(channel: dict, **top: object) -> dict:
    return {"TrainingJobName": "modes", "InputDataConfig": [channel],
            "OutputDataConfig": {"S3OutputPath": "s3://b/out"}, **top}  # fmt: skip


def test_input_modes_and_compression_as_the_api_defines_them() -> None:
    import pytest

    from sdod.errors import UserError
    from sdod.jobspec import parse_job_spec

    base = {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": "s3://b/t/"}}}
    piped = parse_job_spec(_spec_with(base, AlgorithmSpecification={"TrainingInputMode": "Pipe"}))
    assert piped.channels[0].input_mode == "Pipe" and piped.channels[0].streamed
    own = parse_job_spec(_spec_with({**base, "InputMode": "File"},
                                    AlgorithmSpecification={"TrainingInputMode": "Pipe"}))  # fmt: skip
    assert own.channels[0].input_mode == "File" and not own.channels[0].streamed
    assert parse_job_spec(_spec_with({**base, "InputMode": "FastFile"})).channels[0].streamed
    with pytest.raises(UserError, match="Gzip applies to Pipe mode only"):
        parse_job_spec(_spec_with({**base, "CompressionType": "Gzip"}))
    with pytest.raises(UserError, match="a gzip stream cannot serve"):
        parse_job_spec(_spec_with({**base, "InputMode": "Pipe", "CompressionType": "Gzip"}))
    with pytest.raises(UserError, match="TrainingInputMode 'Stream' must be one of"):
        parse_job_spec(_spec_with(base, AlgorithmSpecification={"TrainingInputMode": "Stream"}))

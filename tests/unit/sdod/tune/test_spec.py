"""CreateHyperParameterTuningJob requests: every bad field named, ranges checked against
the hyperparameters' own ranges, unknown parameters refused."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sdod.errors import UserError
from sdod.tune.spec import check_tuning_request, parse_tuning_request

CHANNELS = ("train", "validation", "train_annotation", "validation_annotation")


def request(**config: Any) -> dict[str, Any]:
    """SageMaker's documented Object Detection tuning ranges, as a console would send them."""
    base: dict[str, Any] = {
        "HyperParameterTuningJobName": "od-tuning-1",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:mAP"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 20, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {"Name": "learning_rate", "MinValue": "1e-6", "MaxValue": "0.5", "ScalingType": "Logarithmic"},
                    {"Name": "momentum", "MinValue": "0", "MaxValue": "0.999", "ScalingType": "Linear"},
                    {"Name": "weight_decay", "MinValue": "0", "MaxValue": "0.999", "ScalingType": "Auto"},
                ],
                "IntegerParameterRanges": [
                    {"Name": "mini_batch_size", "MinValue": "8", "MaxValue": "64", "ScalingType": "Auto"}
                ],
                "CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["sgd", "adam", "rmsprop", "adadelta"]}],
            },
            "TrainingJobEarlyStoppingType": "Auto",
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {"num_classes": "3", "num_training_samples": "240", "epochs": "10"},
            "AlgorithmSpecification": {"TrainingImage": "sdod", "TrainingInputMode": "File"},
            "InputDataConfig": [
                {"ChannelName": c, "DataSource": {"S3DataSource": {"S3Uri": f"s3://b/data/{c}"}}}
                for c in CHANNELS
            ],
            "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
            "ResourceConfig": {"InstanceType": "ml.p3.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        },
    }  # fmt: skip
    base["HyperParameterTuningJobConfig"].update(config)
    return base


def test_the_documented_ranges_are_a_valid_request() -> None:
    spec = parse_tuning_request(request())
    assert spec.strategy == "Bayesian" and spec.max_jobs == 20 and spec.max_parallel == 2
    by_name = {r.name: r for r in spec.ranges}
    assert by_name["learning_rate"].log and not by_name["momentum"].log
    assert by_name["optimizer"].values == ("sgd", "adam", "rmsprop", "adadelta")
    trial = spec.trial_request("od-tuning-1-001-abcdef12", {"learning_rate": "0.01"})
    assert trial["TrainingJobName"] == "od-tuning-1-001-abcdef12"
    assert trial["HyperParameters"] == {
        "num_classes": "3", "num_training_samples": "240", "epochs": "10", "learning_rate": "0.01"
    }  # fmt: skip
    assert "StaticHyperParameters" not in trial


def _ranges(r: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return r["HyperParameterTuningJobConfig"]["ParameterRanges"][kind]


BROKEN = {
    "name": (lambda r: r.update(HyperParameterTuningJobName="-bad_"), "HyperParameterTuningJobName"),
    "strategy": (lambda r: r["HyperParameterTuningJobConfig"].update(Strategy="Genetic"), "Strategy: 'Genetic'"),
    "metric": (
        lambda r: r["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"].update(MetricName="train:loss"),
        "objective metric is",
    ),
    "minimize": (
        lambda r: r["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"].update(Type="Minimize"),
        "objective metric is",
    ),
    "max-jobs": (
        lambda r: r["HyperParameterTuningJobConfig"]["ResourceLimits"].update(MaxNumberOfTrainingJobs=0),
        "MaxNumberOfTrainingJobs: an integer from 1 to 750",
    ),
    "parallel": (
        lambda r: r["HyperParameterTuningJobConfig"]["ResourceLimits"].pop("MaxParallelTrainingJobs"),
        "MaxParallelTrainingJobs",
    ),
    "lr-above-range": (lambda r: _ranges(r, "ContinuousParameterRanges")[0].update(MaxValue="2"), "learning_rate"),
    "momentum-negative": (lambda r: _ranges(r, "ContinuousParameterRanges")[1].update(MinValue="-0.1"), "momentum"),
    "min-above-max": (lambda r: _ranges(r, "IntegerParameterRanges")[0].update(MinValue="65"), "MinValue 65 is above"),
    "not-integer": (lambda r: _ranges(r, "IntegerParameterRanges")[0].update(MaxValue="6.5"), "not an integer"),
    "scaling": (lambda r: _ranges(r, "ContinuousParameterRanges")[0].update(ScalingType="Cubic"), "ScalingType"),
    "log-zero": (
        lambda r: _ranges(r, "ContinuousParameterRanges")[1].update(ScalingType="Logarithmic"),
        "Logarithmic scaling needs MinValue > 0",
    ),
    "unknown-param": (
        lambda r: _ranges(r, "ContinuousParameterRanges").append({"Name": "learning_rat", "MinValue": "0.1", "MaxValue": "0.2"}),
        "'learning_rat' is not a hyperparameter",
    ),
    "not-tunable": (
        lambda r: _ranges(r, "IntegerParameterRanges").append({"Name": "epochs", "MinValue": "1", "MaxValue": "5"}),
        "'epochs' is not a tunable hyperparameter",
    ),
    "bad-category": (lambda r: _ranges(r, "CategoricalParameterRanges")[0]["Values"].append("lbfgs"), "optimizer"),
    "static-and-tuned": (
        lambda r: r["TrainingJobDefinition"]["StaticHyperParameters"].update(optimizer="sgd"),
        "optimizer is also tuned",
    ),
    "early-stopping": (
        lambda r: r["HyperParameterTuningJobConfig"].update(TrainingJobEarlyStoppingType="Sometimes"),
        "TrainingJobEarlyStoppingType",
    ),
    "grid-continuous": (lambda r: r["HyperParameterTuningJobConfig"].update(Strategy="Grid"), "CategoricalParameterRanges only"),
    "training-job": (
        lambda r: r["TrainingJobDefinition"]["StaticHyperParameters"].pop("num_classes"),
        "TrainingJobDefinition: ",
    ),
    "warm-start": (
        lambda r: r.update(WarmStartConfig={"ParentHyperParameterTuningJobs": [], "WarmStartType": "Copy"}),
        "WarmStartConfig",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_bad_field_is_named(case: str) -> None:
    raw = request()
    edit, expected = BROKEN[case]
    edit(raw)
    spec, problems = check_tuning_request(raw)
    assert spec is None
    assert any(expected in p for p in problems), problems


def test_all_problems_are_listed_at_once() -> None:
    raw = request(Strategy="Genetic")
    raw["HyperParameterTuningJobName"] = ""
    _ranges(raw, "ContinuousParameterRanges")[0]["MaxValue"] = "2"
    with pytest.raises(UserError, match=r"3 problem\(s\) in the tuning request"):
        parse_tuning_request(raw)


def test_grid_counts_the_combinations(tmp_path: Path) -> None:
    raw = request(Strategy="Grid", TrainingJobEarlyStoppingType="Off")
    raw["HyperParameterTuningJobConfig"]["ParameterRanges"] = {
        "CategoricalParameterRanges": [
            {"Name": "optimizer", "Values": ["sgd", "adam"]},
            {"Name": "learning_rate", "Values": ["0.001", "0.01", "0.1"]},
        ]
    }
    del raw["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"]
    assert len(parse_tuning_request(copy.deepcopy(raw)).grid()) == 6
    path = tmp_path / "tune.json"
    path.write_text(json.dumps(raw))
    run = subprocess.run(
        [sys.executable, "-m", "sdod", "validate-tuning-job", str(path), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["MaxNumberOfTrainingJobs"] == 6
    raw["HyperParameterTuningJobConfig"]["Strategy"] = "Genetic"
    path.write_text(json.dumps(raw))
    run = subprocess.run(
        [sys.executable, "-m", "sdod", "validate-tuning-job", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "Strategy" in run.stderr and "Traceback" not in run.stderr


def test_the_example_request_in_include_is_valid() -> None:
    path = Path(__file__).resolve().parents[4] / "include" / "tuning" / "object-detection.json"
    spec = parse_tuning_request(json.loads(path.read_text()))
    assert {r.name for r in spec.ranges} == {
        "learning_rate", "momentum", "weight_decay", "mini_batch_size", "optimizer"
    }  # fmt: skip
    assert spec.early_stopping == "Auto" and spec.target == 0.85

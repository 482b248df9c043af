"""Tuning jobs end to end: trials are real training jobs (own processes), fine-tuning a
memorised model so that the objective means something within a few CPU epochs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sdod import tools
from tests.integration.conftest import train_memoriser

pytestmark = pytest.mark.integration
CHANNELS = ("train", "validation", "train_annotation", "validation_annotation")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """4 images (validation = train) and a model that has memorised them (mAP > 0.4)."""
    root = tmp_path_factory.mktemp("tuning")
    outcome = train_memoriser(root, num_classes=2, epochs=60, seed=1)
    assert outcome.status == "Completed" and outcome.metrics["validation:mAP"] > 0.4
    return {"root": root, "data": root / "data", "model": Path(str(outcome.artifact))}


def tuning_request(
    base: dict[str, Path], name: str, ranges: dict[str, Any], **config: Any
) -> dict[str, Any]:
    data, model = base["data"], base["model"]
    channels = [
        {"ChannelName": c, "DataSource": {"S3DataSource": {"S3Uri": str(data / c)}}} for c in CHANNELS
    ] + [{"ChannelName": "model", "ContentType": "application/x-sagemaker-model",
          "DataSource": {"S3DataSource": {"S3Uri": str(model)}}}]  # fmt: skip
    job_config = {
        "Strategy": "Random",
        "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:mAP"},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": 3, "MaxParallelTrainingJobs": 1},
        "ParameterRanges": ranges,
        "RandomSeed": 3,
        **config,
    }
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": job_config,
        "TrainingJobDefinition": {
            "StaticHyperParameters": {
                "base_network": "resnet-lite", "use_pretrained_model": "0", "num_classes": "2",
                "num_training_samples": "4", "epochs": "3", "mini_batch_size": "4",
                "augmentation": "none",
            },
            "AlgorithmSpecification": {"TrainingImage": "sdod", "TrainingInputMode": "File"},
            "InputDataConfig": channels,
            "OutputDataConfig": {"S3OutputPath": str(base["root"] / "out")},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        },
    }  # fmt: skip


GENTLE = {  # fine-tuning rates that keep the memorised model's mAP
    "ContinuousParameterRanges": [
        {"Name": "learning_rate", "MinValue": "1e-7", "MaxValue": "1e-5", "ScalingType": "Logarithmic"}
    ],
    "CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["adam", "rmsprop"]}],
}  # fmt: skip


def _objectives(summary: dict[str, Any]) -> list[float]:
    return [
        t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
        for t in summary["TrainingJobSummaries"]
        if "FinalHyperParameterTuningJobObjectiveMetric" in t
    ]


@pytest.fixture()
def storage(tmp_path: Path, base: dict[str, Path]) -> str:
    return f"sqlite:///{base['root'] / 'studies.db'}"


@pytest.fixture()
def postgres() -> Any:
    """A throw-away PostgreSQL database on this machine's server (as the cluster keeps its
    studies); skipped where none runs, except under CI."""
    import uuid

    import psycopg2

    name = f"sdod_tuning_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg2.connect(
            host="127.0.0.1", user="postgres", dbname="postgres", connect_timeout=3
        )
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL on 127.0.0.1 ({exc})")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1/{name}"
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_a_random_search_two_at_a_time_from_the_cli(
    base: dict[str, Path], storage: str, tmp_path: Path
) -> None:
    spec = tmp_path / "tune.json"
    spec.write_text(json.dumps(tuning_request(
        base, "rand", GENTLE, ResourceLimits={"MaxNumberOfTrainingJobs": 3, "MaxParallelTrainingJobs": 2}
    )))  # fmt: skip
    env = {**os.environ, "SDOD_TRAINING_SLOTS": "2", "SDOD_TUNING_STORAGE": storage}
    run = subprocess.run(
        [sys.executable, "-m", "sdod", "tune", "--tuning-spec", str(spec), "--parallel", "2",
         "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 at a time" in run.stdout
    assert [line.split()[1] for line in run.stdout.splitlines() if line.startswith("trial ")] == [
        "1/3", "2/3", "3/3"
    ]  # fmt: skip
    out = base["root"] / "out"
    summary = json.loads((out / "rand" / "describe.json").read_text())
    assert (out / "rand" / "objective.png").stat().st_size > 1000
    assert summary["HyperParameterTuningJobStatus"] == "Completed"
    assert summary["TrainingJobStatusCounters"]["Completed"] == 3
    assert summary["ObjectiveStatusCounters"] == {"Succeeded": 3, "Pending": 0, "Failed": 0}
    best = summary["BestTrainingJob"]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == max(_objectives(summary))
    names = [t["TrainingJobName"] for t in summary["TrainingJobSummaries"]]
    assert all(re.fullmatch(r"rand-00[1-3]-[0-9a-f]{8}", n) for n in names), names
    for t in summary["TrainingJobSummaries"]:
        lr = float(t["TunedHyperParameters"]["learning_rate"])
        assert 1e-7 <= lr <= 1e-5 and t["TunedHyperParameters"]["optimizer"] in ("adam", "rmsprop")
        assert (out / t["TrainingJobName"] / "output" / "model.tar.gz").is_file()


def test_auto_early_stopping_stops_an_absurd_learning_rate(
    base: dict[str, Path], storage: str, tmp_path: Path
) -> None:
    """Grid runs in the order listed: the gentle rate first, then an absurd one, which the
    median rule stops (SIGTERM: the job ends Stopped, with a model) before its last epoch."""
    ranges = {
        "CategoricalParameterRanges": [{"Name": "learning_rate", "Values": ["0.00001", "0.5"]}]
    }
    raw = tuning_request(base, "auto", ranges, Strategy="Grid", TrainingJobEarlyStoppingType="Auto")
    raw["TrainingJobDefinition"]["StaticHyperParameters"].update(epochs="6", optimizer="adam")
    del raw["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"]
    lines: list[str] = []
    summary = tools.tune(tuning_spec=raw, storage=storage, work=str(tmp_path), log=lines.append)
    gentle, absurd = summary["TrainingJobSummaries"]
    assert gentle["TunedHyperParameters"] == {"learning_rate": "0.00001"}
    assert gentle["TrainingJobStatus"] == "Completed" and "EarlyStopped" not in gentle
    assert absurd["TrainingJobStatus"] == "Stopped" and absurd["EarlyStopped"] is True
    assert summary["TrainingJobStatusCounters"]["Stopped"] == 1
    assert any("early stopping after epoch" in line for line in lines), lines
    assert (base["root"] / "out" / absurd["TrainingJobName"] / "output" / "model.tar.gz").is_file()
    log = (tmp_path / "auto" / absurd["TrainingJobName"] / "train.log").read_text()
    assert log.count("validation mAP") < 6  # stopped before the last epoch
    assert summary["BestTrainingJob"]["TrainingJobName"] == gentle["TrainingJobName"]


def test_a_failed_trial_is_counted_and_the_search_goes_on(
    base: dict[str, Path], postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(With the study in PostgreSQL, as on the cluster.)"""
    monkeypatch.setenv("SDOD_FAIL_AT", f"forward:{tmp_path / 'failed-once'}")  # the first trial
    raw = tuning_request(
        base,
        "fails",
        GENTLE,
        ResourceLimits={"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
    )
    summary = tools.tune(tuning_spec=raw, storage=postgres, work=str(tmp_path), log=lambda _: None)
    first, second = summary["TrainingJobSummaries"]
    assert first["TrainingJobStatus"] == "Failed" and "injected failure" in first["FailureReason"]
    assert second["TrainingJobStatus"] == "Completed"
    assert summary["TrainingJobStatusCounters"]["NonRetryableError"] == 1
    assert summary["ObjectiveStatusCounters"]["Failed"] == 1
    assert summary["BestTrainingJob"]["TrainingJobName"] == second["TrainingJobName"]


def test_bayesian_stops_at_the_target_and_warm_starts_from_a_parent(
    base: dict[str, Path], storage: str, tmp_path: Path
) -> None:
    import optuna

    parent = tools.tune(
        tuning_spec=tuning_request(base, "parent", GENTLE, ResourceLimits={"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1}),
        storage=storage, work=str(tmp_path), log=lambda _: None,
    )  # fmt: skip
    assert len(parent["TrainingJobSummaries"]) == 2
    raw = tuning_request(
        base, "child", GENTLE, Strategy="Bayesian",
        ResourceLimits={"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 1},
        TuningJobCompletionCriteria={"TargetObjectiveMetricValue": 0.3},
    )  # fmt: skip
    raw["WarmStartConfig"] = {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "parent"}],
        "WarmStartType": "IdenticalDataAndAlgorithm",
    }
    lines: list[str] = []
    summary = tools.tune(tuning_spec=raw, storage=storage, work=str(tmp_path), log=lines.append)
    assert "warm start: 2 finished trial(s) of parent" in lines
    assert len(summary["TrainingJobSummaries"]) == 1  # the first trial already reached 0.3
    assert summary["TuningJobCompletionDetails"]["Reason"].startswith("TargetObjectiveMetricValue")
    study = optuna.load_study(study_name="child", storage=storage)
    parents = [t for t in study.trials if t.user_attrs.get("warm_start_parent") == "parent"]
    assert len(parents) == 2 and {t.value for t in parents} == set(_objectives(parent))


def test_hyperband_runs_its_trials_under_the_hyperband_pruner(
    base: dict[str, Path], storage: str, tmp_path: Path
) -> None:
    import optuna

    raw = tuning_request(
        base, "hyperband", GENTLE, Strategy="Hyperband",
        ResourceLimits={"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
        StrategyConfig={"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 3}},
    )  # fmt: skip
    summary = tools.tune(tuning_spec=raw, storage=storage, work=str(tmp_path), log=lambda _: None)
    assert len(summary["TrainingJobSummaries"]) == 2
    assert summary["ObjectiveStatusCounters"]["Succeeded"] == 2
    study = optuna.load_study(study_name="hyperband", storage=storage)
    reported = [t.intermediate_values for t in study.trials if "TrainingJobName" in t.user_attrs]
    assert len(reported) == 2 and all(reported)  # each trial fed its per-epoch mAP to the pruner

"""A tuning job's steps: the whole job in one process, or the DAG's three tasks.

`run_tuning` runs it all here (the CLI's `tune`). The `sdod_tune` DAG runs it in steps,
each in its own task, sharing the study's database: `prepare_tuning` once (warm start,
Grid's combinations), `run_lane` once per parallel slot (trials one after another until
the job is done), then `summarize_tuning`. Each of these writing a summary puts
`describe.json` and `objective.png` in `<S3OutputPath>/<tuning-job>/`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdod.settings import SiteSettings
from sdod.tune.search import TuningRun
from sdod.tune.spec import OBJECTIVE, TuningSpec

if TYPE_CHECKING:
    from sdod.jobspec import TrainingJobSpec
    from sdod.storage import S3Options

Log = Callable[[str], None]


def default_storage() -> str:
    """`SDOD_TUNING_STORAGE`, else SQLite in the state folder (`sdod.settings`)."""
    url = SiteSettings.from_env().tuning_storage
    if url.startswith("sqlite:///"):  # SQLite creates the file, not its folder
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return url


def read_tuning_request(request: str | dict[str, Any]) -> TuningSpec:
    """A checked CreateHyperParameterTuningJob request from a JSON file or a dict."""
    from sdod.storage import read_json
    from sdod.tune.spec import parse_tuning_request

    raw = read_json(request, "tuning spec") if isinstance(request, str) else request
    return parse_tuning_request(raw)


def with_training_channels(spec: TuningSpec, request: TrainingJobSpec) -> TuningSpec:
    """The tuning job whose trials read `request`'s channels (the DAG's packed RecordIO);
    a new spec: `spec` and its request stay as they are."""
    channels = request.to_request()["InputDataConfig"]
    training = {**spec.training, "InputDataConfig": channels}
    return replace(spec, training=training, raw={**spec.raw, "TrainingJobDefinition": training})


def _open(
    spec: TuningSpec, *, parallel: int = 1, work: str | None, storage: str | None,
    s3: S3Options | None, log: Log = print,
) -> TuningRun:  # fmt: skip
    from sdod.tracking.tuning import trial_env

    folder = Path(work) if work else SiteSettings.from_env().state_dir / "tuning"
    env = {**(s3.env() if s3 is not None else {}), **trial_env(spec.name, _params(spec), log)}
    return TuningRun(
        spec, parallel=parallel, work=folder / spec.name, storage=storage or default_storage(),
        log=log, env=env,
    )  # fmt: skip


def _params(spec: TuningSpec) -> dict[str, Any]:
    """The tuning job's settings as its MLflow run's params (when tracking is on)."""
    config = spec.raw.get("HyperParameterTuningJobConfig") or {}
    return {
        "Strategy": spec.strategy, "MaxNumberOfTrainingJobs": spec.max_jobs,
        "MaxParallelTrainingJobs": spec.max_parallel, "EarlyStopping": spec.early_stopping,
        "ParameterRanges": json.dumps(config.get("ParameterRanges") or {}, sort_keys=True),
        **{f"static.{k}": v for k, v in spec.static.items()},
    }  # fmt: skip


def prepare_tuning(
    spec: TuningSpec, *, channels_from: TrainingJobSpec | None = None,
    storage: str | None = None, s3: S3Options | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Once per tuning job, before any lane: the warm start and (Grid) every combination
    enqueued in the study; with `channels_from`, the trials read that job's channels.
    Returns the request the lanes run (`tuning`) and the lanes' numbers."""
    if channels_from is not None:
        spec = with_training_channels(spec, channels_from)
    _open(spec, work=None, storage=storage, s3=s3).prepare()
    return {
        "HyperParameterTuningJobName": spec.name,
        "tuning": spec.raw,
        "lanes": list(range(spec.max_parallel)),
    }


def run_lane(
    spec: TuningSpec, *, lane: int, work: str | None = None, storage: str | None = None,
    s3: S3Options | None = None, log: Log = print,
) -> dict[str, Any]:  # fmt: skip
    """One parallel slot: trials one after another from the shared study until the job is
    done (at MaxRuntimeInSeconds the running trial gets SIGTERM)."""
    _open(spec, work=work, storage=storage, s3=s3, log=log).run_lanes([lane])
    return {"HyperParameterTuningJobName": spec.name, "lane": lane}


def summarize_tuning(
    spec: TuningSpec, *, storage: str | None = None, s3: S3Options | None = None
) -> dict[str, Any]:
    """The DescribeHyperParameterTuningJob summary of the study, written beside the trials."""
    return write_summary(spec, _open(spec, work=None, storage=storage, s3=s3).describe(), s3=s3)


def run_tuning(
    spec: TuningSpec, *, parallel: int = 1, work: str | None = None, storage: str | None = None,
    s3: S3Options | None = None, log: Log = print,
) -> dict[str, Any]:  # fmt: skip
    """The whole tuning job in this process, `parallel` trials at a time; returns (and
    writes) the DescribeHyperParameterTuningJob summary."""
    run = _open(spec, parallel=parallel, work=work, storage=storage, s3=s3, log=log)
    log(
        f"tuning job {spec.name}: {spec.strategy}, up to {run.total} training jobs, "
        f"{run.parallel} at a time, early stopping {spec.early_stopping}"
    )
    summary = write_summary(spec, run.run(), s3=s3)
    best = summary.get("BestTrainingJob")
    value = best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] if best else None
    log(
        f"tuning job {spec.name}: {summary['HyperParameterTuningJobStatus']} "
        f"({summary['TuningJobCompletionDetails']['Reason']}); best: "
        + (f"{best['TrainingJobName']} {OBJECTIVE}={value:.4f}" if best else "none")
    )
    return summary


def write_summary(
    spec: TuningSpec, summary: dict[str, Any], s3: S3Options | None = None
) -> dict[str, Any]:
    """`describe.json` and `objective.png` to `<S3OutputPath>/<tuning-job>/` (its URI in
    the summary's `OutputUri`)."""
    import tempfile

    from sdod.storage import join_uri
    from sdod.tracking.tuning import tuning_finished
    from sdod.transfer import upload_tree
    from sdod.tune.picture import objective_picture

    output = (spec.training.get("OutputDataConfig") or {}).get("S3OutputPath")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "describe.json").write_text(json.dumps(summary, indent=2))
        objective_picture(summary, Path(tmp) / "objective.png")
        if output:
            where = join_uri(output, spec.name)
            upload_tree(Path(tmp), where, s3=s3)
            summary["OutputUri"] = where
        files = [Path(tmp) / "describe.json", Path(tmp) / "objective.png"]
        tuning_finished(spec.name, summary, files, log=logging.getLogger("sdod.tracking").warning)
    return summary

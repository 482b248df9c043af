"""`tune` and `validate-tuning-job`: SageMaker's automatic model tuning on one machine."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sdod.cli.base import EXIT_OK, EXIT_USER, Command


def _configure_tune(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tuning-spec", required=True, help="CreateHyperParameterTuningJob request (JSON)"
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="trials at a time on this machine (at most MaxParallelTrainingJobs; each also "
        "waits for a training slot, SDOD_TRAINING_SLOTS)",
    )
    p.add_argument("--work", help="folder for the trials' job folders (.state/tuning)")
    p.add_argument("--storage", help="study database URL (SDOD_TUNING_STORAGE; SQLite default)")


def _run_tune(args: argparse.Namespace) -> int:
    from sdod import tools

    def log(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    summary = tools.tune(
        tuning_spec=args.tuning_spec,
        parallel=args.parallel,
        work=args.work,
        storage=args.storage,
        log=log,
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    return EXIT_OK if "BestTrainingJob" in summary else EXIT_USER


def _configure_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("tuning_spec", help="CreateHyperParameterTuningJob request (JSON file)")


def _run_validate(args: argparse.Namespace) -> dict[str, Any]:
    from sdod.storage import read_json
    from sdod.tune.spec import parse_tuning_request

    spec = parse_tuning_request(read_json(args.tuning_spec, "tuning spec"))
    return {
        "HyperParameterTuningJobName": spec.name,
        "Strategy": spec.strategy,
        "ParameterRanges": [r.to_dict() for r in spec.ranges],
        "StaticHyperParameters": spec.static,
        "MaxNumberOfTrainingJobs": len(spec.grid()) if spec.strategy == "Grid" else spec.max_jobs,
        "MaxParallelTrainingJobs": spec.max_parallel,
        "TrainingJobEarlyStoppingType": spec.early_stopping,
    }


COMMANDS: list[Command] = [
    Command(
        "validate-tuning-job",
        "check a CreateHyperParameterTuningJob request without running it",
        _configure_validate,
        _run_validate,
    ),
    Command(
        "tune",
        "run a hyperparameter tuning job: trials are training jobs; a line per finished trial",
        _configure_tune,
        _run_tune,
    ),
]

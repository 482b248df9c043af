"""`validate-job`: check a CreateTrainingJob request and print what sdod will do with it."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from sdod.cli.base import Command

if TYPE_CHECKING:
    from sdod.jobspec import TrainingJobSpec


def _configure_validate_job(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_spec", help="CreateTrainingJob request (JSON file)")


def _run_validate_job(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import stages

    return job_plan(stages.validate_job(job_spec=args.job_spec))


def _render_validate_job(r: dict[str, Any]) -> str:
    lines = [f"training job {r['TrainingJobName']}: valid; sdod will"]
    for c in r["channels"]:
        lines.append(
            f"  read channel {c['name']} ({c['content_type'] or 'content type from its files'}, "
            f"{c['mode']} mode: {c['read']}) from {c['uri']}"
        )
    lines.append(f"  train with: {json.dumps(r['HyperParameters'])}")
    lines.append(
        f"  stop after {r['max_runtime_seconds']} s (MaxRuntimeInSeconds)"
        + (f", the whole job within {r['max_wait_seconds']} s" if r["max_wait_seconds"] else "")
    )
    lines.append(
        f"  write {r['output']}"
        + (f", checkpoints to {r['checkpoints']}" if r["checkpoints"] else "")
    )
    lines.extend(f"  note: {note}" for note in r["notes"])
    ignored = r["ignored_fields"] + r["ignored_hyperparameters"]
    if ignored:
        lines.append(f"  ignore (no use in sdod): {', '.join(ignored)}")
    return "\n".join(lines)


def job_plan(spec: TrainingJobSpec) -> dict[str, Any]:
    """What sdod will do with a valid request: normalised hyperparameters (defaults filled
    in), each channel with its mode, the stopping condition, the fields it ignores."""
    hp = spec.hp
    return {
        "TrainingJobName": spec.name,
        "HyperParameters": hp.to_strings(),
        "channels": [
            {
                "name": c.name,
                "uri": c.uri,
                "content_type": c.content_type,
                "mode": c.input_mode,
                "read": "streamed, never downloaded" if c.streamed else "downloaded first",
                "s3_data_type": c.s3_data_type,
                "compression": c.compression,
                "shuffle_seed": c.shuffle_seed,
                "distribution": c.distribution,
            }
            for c in spec.channels
        ],
        "output": f"{spec.output_path.rstrip('/')}/{spec.name}/output/model.tar.gz",
        "checkpoints": spec.checkpoint_uri,
        "instances": spec.instance_count,
        "max_runtime_seconds": spec.max_runtime_seconds,
        "max_wait_seconds": spec.max_wait_seconds,
        "ignored_fields": list(spec.ignored_fields),
        "ignored_hyperparameters": list(hp.ignored),
        "notes": [n for c in spec.channels if (n := c.sharding_note(spec.instance_count))],
    }


COMMANDS: list[Command] = [
    Command(
        "validate-job",
        "check a CreateTrainingJob request without running it; print what sdod will do",
        _configure_validate_job,
        _run_validate_job,
        _render_validate_job,
    ),
]

"""`S3DataDistributionType`: ShardedByS3Key is accepted and `validate-job` says how sdod
reads it; anything else is refused naming the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

JOB = Path(__file__).resolve().parents[4] / "include" / "jobs" / "sagemaker-example.json"


def _validate(tmp_path: Path, distribution: str, *flags: str) -> subprocess.CompletedProcess[str]:
    raw = json.loads(JOB.read_text())
    raw["ResourceConfig"]["InstanceCount"] = 2
    raw["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataDistributionType"] = distribution
    (tmp_path / "job.json").write_text(json.dumps(raw))
    return subprocess.run(
        [sys.executable, "-m", "sdod", "validate-job", str(tmp_path / "job.json"), *flags],
        capture_output=True,
        text=True,
    )


def test_sharded_by_s3_key_is_reported_by_validate_job(tmp_path: Path) -> None:
    run = _validate(tmp_path, "ShardedByS3Key", "--json")
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    assert [c["distribution"] for c in plan["channels"]] == ["ShardedByS3Key", "FullyReplicated"]
    (note,) = plan["notes"]
    assert note.startswith("channel train: S3DataDistributionType ShardedByS3Key is read as")
    assert "once per epoch" in note and "2 machine(s)" in note
    text = _validate(tmp_path, "ShardedByS3Key")
    assert "note: channel train: S3DataDistributionType ShardedByS3Key" in text.stdout


def test_an_unknown_distribution_is_refused_naming_the_field(tmp_path: Path) -> None:
    run = _validate(tmp_path, "Sharded")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert (
        "InputDataConfig[0].DataSource.S3DataSource.S3DataDistributionType 'Sharded'" in run.stderr
    )
    assert "FullyReplicated or ShardedByS3Key" in run.stderr

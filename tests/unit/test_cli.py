"""The CLI contract (DESIGN.md): --help, exit codes, one clear line for user errors, --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _sdod(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdod", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_the_commands() -> None:
    result = _sdod("--help")
    assert result.returncode == 0
    assert "make-sample-data" in result.stdout


def test_user_error_is_one_line_exit_2_without_traceback(tmp_path: Path) -> None:
    result = _sdod("make-sample-data", "--out", str(tmp_path), "--classes", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sdod make-sample-data: error: --classes must be between 1 and 8, got 0"
    ]
    assert "Traceback" not in result.stderr


def test_json_result_on_stdout(tmp_path: Path) -> None:
    result = _sdod("make-sample-data", "--out", str(tmp_path), "--train", "2",
                   "--validation", "1", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["images"] == {"train": 2, "validation": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "train", "train_annotation", "validation", "validation_annotation"
    ]  # fmt: skip

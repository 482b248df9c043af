"""The training-throughput benchmark runs on a GPU (a short configuration)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "train_throughput.py"


@pytest.mark.gpu
def test_train_throughput_benchmark_runs_on_cuda() -> None:
    command = [sys.executable, str(BENCH), "--device", "cuda", "--iters", "3", "--warmup", "2"]
    result = subprocess.run([*command, "--quick"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torchvision ssd300_vgg16" in result.stdout

"""The GPU machine's missing packages, here: on `PYTHONPATH`, this makes them unimportable.

`bench/gpu_check.sh --dry-run` puts this folder first on `PYTHONPATH`, so every Python
process of the dry run (the CLI, the trainer, torchrun's workers, pytest) fails at once on an
import that would fail on the lent GPU machine, whose python3 has torch, torchvision,
numpy, pillow, safetensors, pytest and onnxruntime but no Airflow, boto3, s3fs, Great
Expectations (nor the other packages named below). The training path must import them
lazily, only where an `s3://` URI, a check or a tuning job needs them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

ABSENT = frozenset(
    {
        "airflow",
        "aiobotocore",
        "boto3",
        "botocore",
        "faster_coco_eval",
        "great_expectations",
        "moto",
        "optuna",
        "s3fs",
    }
)


class AbsentOnTheGPUMachine:
    """A meta-path finder that refuses the packages the GPU machine does not have."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(
                f"No module named {name!r} (absent on the GPU machine: "
                "bench/gpu_machine/sitecustomize.py)",
                name=name,
            )
        return None


sys.meta_path.insert(0, AbsentOnTheGPUMachine())

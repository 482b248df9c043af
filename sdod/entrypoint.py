"""The image's entrypoint (`python -m sdod.entrypoint <command>`): one image trains and
serves as a SageMaker bring-your-own algorithm container and runs every Airflow role.

SageMaker starts the image as `<image> train` or `<image> serve`: those go to sdod's CLI,
which reads the container's `/opt/ml` (`sdod.container`). Every other command is an Airflow
one (`api-server`, `scheduler`, `celery worker`, `version`, ...), handed to `airflow` by
exec, so the Airflow process replaces this one (tini's signals reach it directly).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SAGEMAKER_COMMANDS = ("train", "serve")


def main(argv: list[str] | None = None) -> int:
    """Run `train`/`serve` as SageMaker calls them; exec `airflow` with anything else."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] and args[0] in SAGEMAKER_COMMANDS:
        from sdod.cli import main as sdod_main

        return sdod_main(args)
    beside = Path(sys.executable).parent / "airflow"  # this environment's, else PATH's
    program = str(beside) if beside.is_file() else "airflow"
    os.execvp(program, [program, *args])
    return 1  # not reached: exec replaced this process


if __name__ == "__main__":
    raise SystemExit(main())

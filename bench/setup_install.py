"""What `make setup` spends its minutes on: the old install (pip resolving requirements.txt
against the lock) against the new one (`tools/setup_venv.py`: the lock's pins as written,
uv), each into a new virtual environment with an empty package cache, in the same run.

pip's own log gives its phases: "collect" is the resolution (an index page and, for most
packages, the wheel's metadata fetched per candidate, one at a time), "install" the
unpacking and byte-compiling; "rest" the venv and the editable install of sdod.

Run: `.venv/bin/python bench/setup_install.py` (about 5 minutes on 2 cores; nothing else
should run). Results: `bench/results/setup_install.json`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _common import machine, table, write_results

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "python3.11"
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d+) (.*)$")


def _pip_phases(log: Path) -> dict[str, float]:
    """Seconds from pip's first "Collecting" to "Installing collected packages", and from
    there to "Successfully installed"."""
    at: dict[str, datetime] = {}
    for line in log.read_text().splitlines():
        match = STAMP.match(line)
        if not match:
            continue
        when = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S,%f")
        for mark in ("Collecting", "Installing collected packages", "Successfully installed"):
            if match.group(2).startswith(mark):
                at.setdefault(mark, when)
    collect = at["Installing collected packages"] - at["Collecting"]
    install = at["Successfully installed"] - at["Installing collected packages"]
    return {"collect s": collect.total_seconds(), "install s": install.total_seconds()}


def pip_resolving(tmp: Path) -> dict:
    """The install as `make setup` ran it before issue 31."""
    venv, log = tmp / "venv-pip", tmp / "pip.log"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    env = {**os.environ, "PIP_CACHE_DIR": str(tmp / "pip-cache")}
    start = time.monotonic()
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True)
    subprocess.run([*pip, "install", "--quiet", "--log", str(log), "-r", "requirements.txt",
                    "-c", "requirements.lock"], cwd=ROOT, check=True, env=env)  # fmt: skip
    subprocess.run([*pip, "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", "."],
                   cwd=ROOT, check=True, env=env)  # fmt: skip
    total = time.monotonic() - start
    phases = _pip_phases(log)
    rest = total - phases["collect s"] - phases["install s"]
    return {"install": "pip, resolving", **phases, "rest s": rest, "total s": total}


def lock_as_written(tmp: Path) -> dict:
    """`make setup` now: tools/setup_venv.py (uv; pip where uv cannot be had)."""
    venv = tmp / "venv-lock"
    env = {**os.environ, "UV_CACHE_DIR": str(tmp / "uv-cache"), "PIP_CACHE_DIR": str(tmp / "pc")}
    start = time.monotonic()
    subprocess.run([PYTHON, "tools/setup_venv.py", str(venv)], cwd=ROOT, check=True, env=env)
    total = time.monotonic() - start
    return {"install": "the lock as written (uv)", "collect s": "", "install s": "",
            "rest s": "", "total s": total}  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sdod-setup-") as tmp:
        rows = [pip_resolving(Path(tmp)), lock_as_written(Path(tmp))]
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float):
                row[key] = round(value, 1)
    ratio = rows[0]["total s"] / rows[1]["total s"]
    print(table(rows, list(rows[0])))
    print(f"{machine()} the lock as written is {ratio:.1f}x sooner")
    write_results("setup_install", [*rows, {"ratio": round(ratio, 2)}])


if __name__ == "__main__":
    sys.exit(main())

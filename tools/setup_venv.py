"""`make setup`: the project's virtual environment, installed from `requirements.lock`.

The lock is complete (every package the project runs with, exact pins, written by pip's
resolver from `requirements.txt`), so nothing is resolved again: each pin is installed as
written (`--no-deps`) and the environment is checked for consistency afterwards, which
fails when the lock lacks a package or pins two that disagree.

uv installs the pins: it fetches, unpacks and byte-compiles them in parallel, several
times sooner than pip on the 2-core machine (docs/benchmarks.md, "Setup"). The `.pyc`
files are written here, not left to the first import: where PYTHONDONTWRITEBYTECODE is set
(as on this project's machines) Python would otherwise compile every module it imports
from source in every process, and the test suite took 46 minutes instead of 30. It reads the
package indexes pip is configured with on this machine (`pip config list`: index-url,
extra-index-url, find-links), so it installs the same files pip would; where pip merges
its indexes and takes the best match, uv is told to do the same. Where uv cannot be
installed, pip installs the same pins the same way, more slowly.

Run by the Makefile with the base interpreter: `python3.11 tools/setup_venv.py .venv`.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

UV = "uv==0.13.9"
ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PIP_INDEX_OPTIONS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
}


def index_options(pip_config: str) -> list[str]:
    """uv's options for the indexes in `pip config list`'s output (`scope.key='value'`;
    a value may hold several space-separated locations)."""
    pairs: dict[tuple[str, str], None] = {}
    for line in pip_config.splitlines():
        key, sep, value = line.partition("=")
        flag = PIP_INDEX_OPTIONS.get(key.rsplit(".", 1)[-1].strip())
        if sep and flag is not None:
            pairs.update(dict.fromkeys((flag, loc) for loc in value.strip("'\" ").split()))
    return [part for pair in pairs for part in pair]


def _run(command: list[str]) -> None:
    print("setup:", shlex.join(command), flush=True)
    subprocess.run(command, check=True)


def _pip(python: str, *args: str) -> list[str]:
    return [python, "-m", "pip", "--disable-pip-version-check", *args]


def _install_with_uv(python: str, venv: Path) -> bool:
    """True when uv installed the lock; False when uv itself could not be installed."""
    got_uv = subprocess.run(_pip(python, "install", "-qq", UV), check=False)
    uv = venv / "bin" / "uv"
    if got_uv.returncode != 0 or not uv.exists():
        print(f"setup: {UV} could not be installed; pip installs the lock instead", flush=True)
        return False
    config = subprocess.run(
        _pip(python, "config", "list"), capture_output=True, text=True, check=False
    ).stdout
    install = [str(uv), "pip", "install", "--quiet", "--python", python, "--no-deps"]
    indexes = ["--index-strategy", "unsafe-best-match", *index_options(config)]
    _run([*install, "--compile-bytecode", *indexes, "-r", str(LOCK)])
    _run([*install, "--no-build-isolation", "-e", str(ROOT)])
    _run([str(uv), "pip", "check", "--python", python])
    return True


def _install_with_pip(python: str) -> None:
    _run(_pip(python, "install", "--quiet", "--no-deps", "-r", str(LOCK)))
    _run(_pip(python, "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", str(ROOT)))
    _run(_pip(python, "check"))


def main(argv: list[str]) -> int:
    venv = Path(argv[0] if argv else ".venv").absolute()
    started = time.monotonic()
    python = str(venv / "bin" / "python")
    if not Path(python).exists():
        _run([sys.executable, "-m", "venv", str(venv)])
    try:
        if not _install_with_uv(python, venv):
            _install_with_pip(python)
        # sdod's own modules too (the editable install leaves them in the checkout)
        _run([python, "-m", "compileall", "-q", str(ROOT / "sdod")])
    except subprocess.CalledProcessError as error:
        print(f"setup: failed: {shlex.join(map(str, error.cmd))} exited {error.returncode}")
        return 1
    print(f"setup: {venv.name} ready in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`make setup` installs requirements.lock as written, with no resolution: the lock must be
complete and agree with requirements.txt, and uv must see the indexes pip sees."""

from __future__ import annotations

import importlib.util
import re
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _setup_venv():
    spec = importlib.util.spec_from_file_location("setup_venv", ROOT / "tools" / "setup_venv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, _, version = requirement.partition("==")
            assert version, f"{path.name}: {line!r} is not an exact pin"
            pins[canonicalize_name(re.sub(r"\[.*\]", "", name))] = version
    return pins


def test_every_top_level_pin_is_in_the_lock_at_the_same_version():
    wanted, locked = _pins(ROOT / "requirements.txt"), _pins(ROOT / "requirements.lock")
    assert {name: v for name, v in wanted.items() if locked.get(name) != v} == {}


def test_the_environment_runs_the_locked_versions():
    """Every locked package is installed at its pin (`make setup` also runs `uv pip check`,
    which fails when an installed package needs one the lock lacks)."""
    locked = _pins(ROOT / "requirements.lock")
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()
    }
    assert set(locked) - set(installed) == set()
    differ = {n: (v, installed[n]) for n, v in locked.items() if installed.get(n, v) != v}
    assert differ == {}


def test_uv_gets_the_indexes_pip_is_configured_with():
    config = "\n".join(
        [
            ":env:.find-links='/srv/wheels'",
            "global.find-links='/srv/wheels'",
            "global.extra-index-url='file:///srv/a/simple file:///srv/b/simple'",
            "global.index-url='https://mirror.example/simple'",
            "global.cert='/etc/ssl/certs/ca-certificates.crt'",
            "global.constraint='/etc/pip/constraints.txt'",
        ]
    )
    index_options = _setup_venv().index_options
    assert index_options(config) == [
        "--find-links", "/srv/wheels",
        "--extra-index-url", "file:///srv/a/simple",
        "--extra-index-url", "file:///srv/b/simple",
        "--index-url", "https://mirror.example/simple",
    ]  # fmt: skip
    assert index_options("") == []

"""sdod's environment settings, read once at the edge of a process and passed down.

| variable | what | default |
| --- | --- | --- |
| `SDOD_SEED` | seeds the initial weights (reproducible runs) | a fresh draw |
| `SDOD_DATA_WORKERS` | data-loader workers per training process | the CPUs shared out, 1-8 |
| `SDOD_TRAINING_SLOTS` | training jobs at a time on this machine | 1 |
| `SDOD_SLOT_DIR` | where the slots' lock files live | `<tmp>/sdod-slots` |
| `SDOD_RDZV_ENDPOINT` | HOST[:PORT] of the first machine (InstanceCount > 1) | none |
| `SDOD_PRETRAINED_DIR` | a folder of ImageNet weight files | none |
| `TORCH_HOME` | torchvision's cache (`hub/checkpoints`) | `~/.cache/torch` |
| `SDOD_NO_DOWNLOAD` | never download ImageNet weights | downloads allowed |

A bad value is refused when the settings are read, naming the variable and the rule.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sdod.errors import UserError


def _int(env: Mapping[str, str], name: str, lo: int) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if value < lo:
        rule = "a positive integer" if lo == 1 else f"a whole number >= {lo}"
        raise UserError(f"{name} must be {rule}, got {raw!r}")
    return value


@dataclass(frozen=True)
class RuntimeSettings:
    seed: int | None = None
    data_workers: int | None = None
    training_slots: int = 1
    slot_dir: Path = Path(tempfile.gettempdir()) / "sdod-slots"
    rdzv_endpoint: str | None = None
    pretrained_dir: Path | None = None
    torch_home: Path = Path.home() / ".cache" / "torch"
    no_download: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        env = os.environ if env is None else env
        seed = env.get("SDOD_SEED")
        try:
            seed_value = int(seed) if seed not in (None, "") else None
        except ValueError:
            raise UserError(f"SDOD_SEED must be an integer, got {seed!r}") from None
        default = cls()
        pretrained = env.get("SDOD_PRETRAINED_DIR")
        return cls(
            seed=seed_value,
            data_workers=_int(env, "SDOD_DATA_WORKERS", 0),
            training_slots=_int(env, "SDOD_TRAINING_SLOTS", 1) or 1,
            slot_dir=Path(env.get("SDOD_SLOT_DIR") or default.slot_dir),
            rdzv_endpoint=env.get("SDOD_RDZV_ENDPOINT") or None,
            pretrained_dir=Path(pretrained) if pretrained else None,
            torch_home=Path(env.get("TORCH_HOME") or default.torch_home),
            no_download=env.get("SDOD_NO_DOWNLOAD", "") not in ("", "0"),
        )

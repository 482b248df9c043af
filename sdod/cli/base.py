"""The command table's building blocks, shared by the command modules."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Any]
    render: Callable[[Any], str] | None = None


def render_lines(result: dict[str, Any]) -> str:
    return "\n".join(
        f"{k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in result.items()
    )


def add_dataset_arguments(
    p: argparse.ArgumentParser, *, rec: bool = True, images_help: str = ""
) -> None:
    """The dataset inputs several commands share: image+JSON channels, a manifest, a .rec."""
    p.add_argument("--images", help=images_help or "image channel folder (with --annotations)")
    p.add_argument("--annotations", help="annotation channel folder (SageMaker JSON)")
    p.add_argument("--manifest", help="augmented manifest (JSON Lines)")
    if rec:
        p.add_argument("--rec", help="MXNet .rec file")

"""The command table's building blocks, shared by the command modules."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# the exit codes, defined with the errors they stand for; the command modules take them here
from sdod.errors import EXIT_INTERNAL as EXIT_INTERNAL
from sdod.errors import EXIT_OK as EXIT_OK
from sdod.errors import EXIT_USER as EXIT_USER
from sdod.errors import UserError


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


def add_slicing_arguments(p: argparse.ArgumentParser) -> None:
    """`--tile-size`, `--tile-overlap`, `--tile-whole`: sliced inference (sdod.serve.slicing)."""
    group = p.add_argument_group("large images: predict tile by tile and merge")
    group.add_argument("--tile-size", type=int, help="tile side in image pixels (e.g. 400)")
    group.add_argument(
        "--tile-overlap", type=int, help="pixels neighbouring tiles share (a fifth of the size)"
    )
    group.add_argument(
        "--tile-whole", action="store_true", help="also run the whole image (large objects)"
    )


def slicing_from(args: argparse.Namespace) -> Any:
    from sdod.serve.slicing import Slicing

    if args.tile_size is None:
        if args.tile_overlap is not None or args.tile_whole:
            raise UserError("--tile-overlap and --tile-whole need --tile-size")
        return None
    overlap = args.tile_size // 5 if args.tile_overlap is None else args.tile_overlap
    return Slicing(args.tile_size, overlap, args.tile_whole)

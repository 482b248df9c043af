"""`python -m sdod <command>`: one subcommand per stage and tool (DESIGN.md's CLI contract).

Exit codes: 0 success, 2 user error (one line on stderr, no traceback), 1 internal failure.
`--json` prints the command's result as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence

from sdod import __version__
from sdod.cli import data, job, model, serve, tune
from sdod.cli.base import EXIT_INTERNAL, EXIT_OK, EXIT_USER, Command, render_lines
from sdod.errors import UserError

# make-sample-data ... rec-dump; validate-job; train ... layers; predict ...; tune
COMMANDS: list[Command] = [
    *data.COMMANDS,
    *job.COMMANDS,
    *model.COMMANDS,
    *serve.COMMANDS,
    *tune.COMMANDS,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdod",
        description="SageMaker built-in Object Detection (SSD) on PyTorch: the pipeline stages.",
    )
    parser.add_argument("--version", action="version", version=f"sdod {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
        command.configure(p)
        p.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Command = args._command
    try:
        result = command.run(args)
    except UserError as exc:
        print(f"sdod {command.name}: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print(f"sdod {command.name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, like cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug or an environment failure: keep the traceback
        traceback.print_exc()
        print(f"sdod {command.name}: internal error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    if isinstance(result, int):
        return result
    if args.json:
        print(json.dumps(result, indent=2))
    elif result is not None:
        print((command.render or render_lines)(result))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``precompute`` command line: parses, runs one command, prints a failure as one line.

Each module of this package adds its commands; a command imports what it needs when it runs,
so reading a report loads neither Dagster nor the definitions.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import sqlalchemy as sa

from precompute_assets.cli import reading, running, serving, store, tools
from precompute_assets.core.db import safe_url
from precompute_assets.core.errors import USER_ERRORS


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.command(args)
    except USER_ERRORS as error:
        print(f"precompute: error: {safe_url(str(error))}", file=sys.stderr)
        return 1
    except sa.exc.DBAPIError as error:
        # A database that answered, then refused: its own first line says why.
        reason = str(error.orig).strip().splitlines()[0]
        print(f"precompute: error: the database refused: {safe_url(reason)}", file=sys.stderr)
        return 1


def parser() -> argparse.ArgumentParser:
    commands_parser = argparse.ArgumentParser(
        prog="precompute", description="Pre-computed usage reports on Dagster."
    )
    commands = commands_parser.add_subparsers(required=True, metavar="COMMAND")
    for module in (running, reading, serving, tools, store):
        module.add_commands(commands)
    return commands_parser


if __name__ == "__main__":
    raise SystemExit(main())

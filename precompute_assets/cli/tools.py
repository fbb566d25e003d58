"""``precompute tools`` and ``precompute check-tool``: the tools found, and their contract."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from precompute_assets.core.db import check_reachable, create_engine_for
from precompute_assets.core.registry import discover, get_tool, load_tools
from precompute_assets.core.settings import Settings
from precompute_assets.core.text import format_table


def add_commands(commands: Any) -> None:
    tools = commands.add_parser(
        "tools", help="every tool found: its origin, and whether it loaded or why not"
    )
    tools.set_defaults(command=tools_command)

    check_tool = commands.add_parser(
        "check-tool",
        help="check a tool against its contract: batches shuffled, duplicated, re-cut, in threads",
    )
    check_tool.add_argument("tool")
    check_tool.add_argument(
        "--scope", help="scope to check (default: the largest of the tool's first 20 scopes)"
    )
    check_tool.set_defaults(command=check_tool_command)


def tools_command(args: argparse.Namespace) -> int:
    registry = discover()
    rows = [
        [entry.name, entry.status, entry.origin, entry.problem or "-"] for entry in registry.entries
    ]
    print(format_table(["tool", "status", "origin", "problem"], rows))
    return 0


def check_tool_command(args: argparse.Namespace) -> int:
    from precompute_assets.checker import check_tool, format_check
    from precompute_assets.contract import MalformedReportError

    settings = Settings.from_env()
    tool = get_tool(load_tools(), args.tool)
    source = check_reachable(create_engine_for(settings.source_url, read_only=True))
    try:
        result = check_tool(
            tool, source, args.scope, batch_size=settings.batch_size, max_shards=settings.max_shards
        )
    except MalformedReportError as error:
        print(f"precompute: error: {error}", file=sys.stderr)
        return 1
    print(format_check(result))
    if result.violation is not None:
        print(f"precompute: error: {tool.name} breaks its contract", file=sys.stderr)
        return 1
    return 0

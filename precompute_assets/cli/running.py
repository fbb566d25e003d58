"""``precompute demo``, ``refresh`` and ``touch``: commands that write, through Dagster."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from precompute_assets.core.db import connect, create_engine_for
from precompute_assets.core.errors import UnknownScopeError
from precompute_assets.core.registry import get_tool, load_tools
from precompute_assets.core.settings import Settings
from precompute_assets.core.text import shorten


def add_commands(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="seed a demo source and compute every report through Dagster"
    )
    demo.add_argument("--tenants", type=int, default=3)
    demo.add_argument("--spaces", type=int, default=20, help="spaces across all tenants")
    demo.add_argument("--work-items", type=int, default=200_000, help="work items in all")
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(command=demo_command)

    refresh = commands.add_parser("refresh", help="recompute one scope's report now")
    refresh.add_argument("tool")
    refresh.add_argument("scope")
    refresh.add_argument(
        "--no-wait", action="store_true", help="start the run in the background, print its id"
    )
    refresh.add_argument("--run-id", help=argparse.SUPPRESS)
    refresh.set_defaults(command=refresh_command)

    touch = commands.add_parser(
        "touch", help="add work items to demo spaces as users would, moving their watermarks"
    )
    touch.add_argument("scopes", nargs="*", help="space keys (default: every space)")
    touch.add_argument("--items", type=int, default=5, help="work items to add per space")
    touch.set_defaults(command=touch_command)


def demo_command(args: argparse.Namespace) -> int:
    from precompute_assets.demo.run import format_summary, run_demo
    from precompute_assets.demo.source import DemoScale
    from precompute_assets.orchestration.runs import project_instance

    started = time.perf_counter()
    scale = DemoScale(
        tenants=args.tenants, spaces=args.spaces, work_items=args.work_items, seed=args.seed
    )
    tools = load_tools()
    # Entered, the instance is the one definitions load against in this process.
    with project_instance(Path.cwd()) as instance:
        summary = run_demo(scale, Settings.from_env(), instance, tools)
    print()
    print(format_summary(summary, tools))
    print()
    print(f"{len(summary)} scopes, {len(tools)} tools in {time.perf_counter() - started:.1f}s.")
    example = summary[0].scope if summary else "SCOPE"
    print(f"Read one:    {_program()} report unused_fields {example} --unused-only")
    print("Open the UI: make ui   (then http://127.0.0.1:3000, the runs above are there)")
    return 0


def refresh_command(args: argparse.Namespace) -> int:
    from precompute_assets.core.reader import ReportReader
    from precompute_assets.orchestration.runs import (
        project_instance,
        refresh_in_background,
        refresh_scope,
    )

    settings = Settings.from_env()
    tool = get_tool(load_tools(), args.tool)
    if args.no_wait:
        run_id = refresh_in_background(tool, args.scope, settings)
        print(f"started run {run_id} for {tool.name}/{args.scope}; follow it in the UI (make ui)")
        return 0
    with project_instance(Path.cwd()) as instance:
        result = refresh_scope(tool, args.scope, settings, instance, run_id=args.run_id)
    if not result.success:
        print(f"precompute: error: run {result.run_id} failed; see it in the UI", file=sys.stderr)
        return 1
    header = ReportReader.from_settings(settings, {tool.name: tool}).read(tool.name, args.scope)
    print(
        f"run {result.run_id} refreshed {tool.name}/{args.scope}: {header.header.row_count} rows, "
        f"{header.header.unused_count} unused"
    )
    return 0


def touch_command(args: argparse.Namespace) -> int:
    from precompute_assets.demo.source import touch_space

    settings = Settings.from_env()
    scopes = args.scopes
    if not scopes:
        with connect(create_engine_for(settings.source_url, must_exist=True)) as source:
            scopes = [key for (key,) in source.exec_driver_sql("SELECT key FROM spaces")]
    for scope in scopes:
        try:
            touch_space(settings.source_url, scope, items=args.items)
        except LookupError:
            raise UnknownScopeError(
                f"unknown scope {shorten(scope)!r}: the source has no such space"
            ) from None
    print(f"added {args.items} work items to each of {len(scopes)} spaces")
    return 0


def _program() -> str:
    """How the user called this command, so printed hints can be pasted as they are."""
    called = Path(sys.argv[0])
    if called.name == "precompute" and called.parent != Path():
        try:
            return str(called.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(called)
    return "precompute"

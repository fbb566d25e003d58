"""The ``precompute`` command line: the demo, reports, fleet status and on-demand refreshes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from precompute_assets.core.db import (
    DatabaseUnavailableError,
    connect,
    create_engine_for,
    missing_sqlite_file,
    safe_url,
)
from precompute_assets.core.reader import NoReportError, Report, ReportReader, UnknownScopeError
from precompute_assets.core.registry import (
    ToolContractError,
    UnknownToolError,
    get_tool,
    load_tools,
)
from precompute_assets.core.settings import RefreshSettings, Settings, SettingsError

EXPECTED_ERRORS = (
    UnknownToolError,
    UnknownScopeError,
    NoReportError,
    DatabaseUnavailableError,
    ToolContractError,
    FileNotFoundError,
    SettingsError,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except EXPECTED_ERRORS as error:
        print(f"precompute: error: {safe_url(str(error))}", file=sys.stderr)
        return 1
    except sa.exc.DBAPIError as error:
        # A database that answered, then refused: its own first line says why.
        reason = str(error.orig).strip().splitlines()[0]
        print(f"precompute: error: the database refused: {safe_url(reason)}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="precompute", description="Pre-computed usage reports on Dagster."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="seed a demo source and compute every report through Dagster"
    )
    demo.add_argument("--tenants", type=int, default=3)
    demo.add_argument("--spaces", type=int, default=20, help="spaces across all tenants")
    demo.add_argument("--work-items", type=int, default=200_000, help="work items in all")
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(command=_demo)

    report = commands.add_parser("report", help="print a stored report and how stale it is")
    report.add_argument("tool")
    report.add_argument("scope")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument("--unused-only", action="store_true", help="only the unused entities")
    report.set_defaults(command=_report)

    status = commands.add_parser(
        "status", help="every scope of a tool: utilisation, report age, staleness, by priority"
    )
    status.add_argument("tool")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(command=_status)

    refresh = commands.add_parser("refresh", help="recompute one scope's report now")
    refresh.add_argument("tool")
    refresh.add_argument("scope")
    refresh.add_argument(
        "--no-wait", action="store_true", help="start the run in the background, print its id"
    )
    refresh.add_argument("--run-id", help=argparse.SUPPRESS)
    refresh.set_defaults(command=_refresh)

    touch = commands.add_parser(
        "touch", help="add work items to demo spaces as users would, moving their watermarks"
    )
    touch.add_argument("scopes", nargs="*", help="space keys (default: every space)")
    touch.add_argument("--items", type=int, default=5, help="work items to add per space")
    touch.set_defaults(command=_touch)

    check_tool = commands.add_parser(
        "check-tool",
        help="check a tool against its contract: batches shuffled, duplicated, re-cut, in threads",
    )
    check_tool.add_argument("tool")
    check_tool.add_argument(
        "--scope", help="scope to check (default: the largest of the tool's first 20 scopes)"
    )
    check_tool.set_defaults(command=_check_tool)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from precompute_assets.demo.run import format_summary, run_demo
    from precompute_assets.demo.source import DemoScale
    from precompute_assets.orchestration.runs import RunFailedError, project_instance

    started = time.perf_counter()
    scale = DemoScale(
        tenants=args.tenants, spaces=args.spaces, work_items=args.work_items, seed=args.seed
    )
    settings = Settings.from_env()
    tools = load_tools()
    try:
        # Entered, the instance is the one definitions load against in this process.
        with project_instance(Path.cwd()) as instance:
            summary = run_demo(scale, settings, instance, tools)
    except RunFailedError as error:
        print(f"precompute: error: {error}", file=sys.stderr)
        return 1
    print()
    print(format_summary(summary, tools))
    print()
    print(f"{len(summary)} scopes, {len(tools)} tools in {time.perf_counter() - started:.1f}s.")
    example = summary[0].scope if summary else "SCOPE"
    print(f"Read one:    {_program()} report unused_fields {example} --unused-only")
    print("Open the UI: make ui   (then http://127.0.0.1:3000, the runs above are there)")
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


def _report(args: argparse.Namespace) -> int:
    reader = ReportReader.from_settings(Settings.from_env(), load_tools())
    report = reader.read(args.tool, args.scope, unused_only=args.unused_only)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, allow_nan=False))
    else:
        print(_report_text(report))
    return 0


def _status(args: argparse.Namespace) -> int:
    from precompute_assets.core.status import fleet_status, format_status

    tool = get_tool(load_tools(), args.tool)
    settings = Settings.from_env()
    rows = fleet_status(tool, settings, RefreshSettings.from_env())
    if missing_sqlite_file(settings.store_url):
        print(f"precompute: no report store at {safe_url(settings.store_url)} yet", file=sys.stderr)
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        print(format_status(rows))
    return 0


def _refresh(args: argparse.Namespace) -> int:
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


def _touch(args: argparse.Namespace) -> int:
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
                f"unknown scope {scope!r}: the source has no such space"
            ) from None
    print(f"added {args.items} work items to each of {len(scopes)} spaces")
    return 0


def _check_tool(args: argparse.Namespace) -> int:
    from precompute_assets.checker.tester import check_tool, format_check
    from precompute_assets.contract import MalformedReportError
    from precompute_assets.core.db import check_reachable

    settings = Settings.from_env()
    tool = get_tool(load_tools(), args.tool)
    source = check_reachable(create_engine_for(settings.source_url, must_exist=True))
    try:
        result = check_tool(
            tool,
            source,
            args.scope,
            batch_size=settings.batch_size,
            max_shards=settings.max_shards,
        )
    except MalformedReportError as error:
        print(f"precompute: error: {error}", file=sys.stderr)
        return 1
    print(format_check(result))
    if result.violation is not None:
        print(
            f"precompute: error: {tool.name} breaks its contract: {result.violation}",
            file=sys.stderr,
        )
        return 1
    return 0


def _report_text(report: Report) -> str:
    header = report.header
    lines = [
        f"{header.tool} report for {header.scope}",
        f"  {report.staleness.describe()}",
        f"  {header.entity_count:,} entities scanned in {header.batch_count} batch(es); "
        f"{header.row_count} rows, {header.unused_count} unused",
    ]
    if header.utilisation is not None:
        lines.append(f"  utilisation {header.utilisation:.0%}")
    if report.rows.empty:
        lines.append("  (no rows)")
        return "\n".join(lines)
    table = report.rows.assign(
        name=report.rows["detail"].map(lambda d: d.get("name", "")),
        last_used=report.rows["last_used"].map(
            lambda t: "" if pd.isna(t) else t.strftime("%Y-%m-%d")
        ),
    )[["entity_id", "name", "unused", "usage_count", "last_used"]]
    lines += ["", table.to_string(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

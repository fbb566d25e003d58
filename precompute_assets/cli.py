"""The ``precompute`` command line: run the demo and read stored reports."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from precompute_assets.db import DatabaseUnavailableError
from precompute_assets.reader import NoReportError, Report, ReportReader, UnknownScopeError
from precompute_assets.registry import ToolContractError, UnknownToolError, load_tools
from precompute_assets.settings import Settings

EXPECTED_ERRORS = (
    UnknownToolError,
    UnknownScopeError,
    NoReportError,
    DatabaseUnavailableError,
    ToolContractError,
    FileNotFoundError,
    ValueError,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except EXPECTED_ERRORS as error:
        print(f"precompute: error: {error}", file=sys.stderr)
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
    return parser


def _demo(args: argparse.Namespace) -> int:
    from precompute_assets.demo import format_summary, project_instance, run_demo
    from precompute_assets.demo_source import DemoScale

    started = time.perf_counter()
    scale = DemoScale(
        tenants=args.tenants, spaces=args.spaces, work_items=args.work_items, seed=args.seed
    )
    settings = Settings.from_env()
    tools = load_tools()
    instance = project_instance(Path.cwd())
    summary = run_demo(scale, settings, instance, tools)
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
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print(_report_text(report))
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

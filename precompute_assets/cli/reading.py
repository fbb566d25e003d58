"""``precompute report`` and ``precompute status``: reads of the store, never Dagster."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from precompute_assets.core.db import missing_sqlite_file, safe_url
from precompute_assets.core.registry import get_tool, load_tools
from precompute_assets.core.settings import RefreshSettings, Settings
from precompute_assets.core.text import format_table


def add_commands(commands: Any) -> None:
    report = commands.add_parser("report", help="print a stored report and how stale it is")
    report.add_argument("tool")
    report.add_argument("scope")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument("--unused-only", action="store_true", help="only the unused entities")
    report.set_defaults(command=report_command)

    status = commands.add_parser(
        "status", help="every scope of a tool: utilisation, report age, staleness, by priority"
    )
    status.add_argument("tool")
    status.add_argument("scopes", nargs="*", help="only these scopes (each read by key)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(command=status_command)


def report_command(args: argparse.Namespace) -> int:
    from precompute_assets.core.reader import ReportReader

    reader = ReportReader.from_settings(Settings.from_env(), load_tools())
    report = reader.read(args.tool, args.scope, unused_only=args.unused_only)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, allow_nan=False))
    else:
        print(report_text(report))
    return 0


def status_command(args: argparse.Namespace) -> int:
    from precompute_assets.core.status import fleet_status, format_status

    tool = get_tool(load_tools(), args.tool)
    settings = Settings.from_env()
    rows = fleet_status(tool, settings, RefreshSettings.from_env(), args.scopes or None)
    if missing_sqlite_file(settings.store_url):
        print(f"precompute: no report store at {safe_url(settings.store_url)} yet", file=sys.stderr)
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        print(format_status(rows))
    return 0


def report_text(report: Any) -> str:
    """A stored report as a person reads it: its header, staleness, then a table of rows."""
    header = report.header
    lines = [
        f"{header.tool} report for {header.scope}",
        f"  {report.staleness.describe()}",
        f"  {header.entity_count:,} entities scanned in {header.batch_count} batch(es); "
        f"{header.row_count} rows, {header.unused_count} unused",
    ]
    if header.utilisation is not None:
        lines.append(f"  utilisation {header.utilisation:.0%}")
    if not report.records:
        lines.append("  (no rows)")
        return "\n".join(lines)
    table = [
        [
            record["entity_id"],
            str(record["detail"].get("name", "")),
            "yes" if record["unused"] else "no",
            str(record["usage_count"]),
            _day(record["last_used"]),
        ]
        for record in report.records
    ]
    titles = ["entity_id", "name", "unused", "usage_count", "last_used"]
    lines += ["", format_table(titles, table)]
    return "\n".join(lines)


def _day(seconds: int | None) -> str:
    return "never" if seconds is None else time.strftime("%Y-%m-%d", time.gmtime(seconds))

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

    refresh = commands.add_parser(
        "refresh",
        help="recompute one scope's report now, through the run queue (needs the Dagster "
        "webserver and daemon); joins the scope's run if one is in flight",
    )
    refresh.add_argument("tool")
    refresh.add_argument("scope")
    refresh.add_argument(
        "--no-wait", action="store_true", help="queue the run (or find it), print its id, return"
    )
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
    settings = Settings.from_env()
    # Entered, the instance is the one definitions load against in this process.
    with project_instance(Path.cwd()) as instance:
        summary = run_demo(scale, settings, instance, tools)
    print()
    print(format_summary(summary, tools))
    print()
    print(f"{len(summary)} scopes, {len(tools)} tools in {time.perf_counter() - started:.1f}s.")
    example = summary[0].scope if summary else "SCOPE"
    print(f"Read one:    {_program()} report unused_fields {example} --unused-only")
    print("Open the UI: make ui   (then http://127.0.0.1:3000, the runs above are there)")
    tenants = sorted({h.tenant for row in summary for h in row.headers.values() if h.tenant})
    if tenants:
        _print_admin_key(settings, tenants[0])
    return 0


def _print_admin_key(settings: Settings, tenant: str) -> None:
    """A key for the first tenant's admin, printed once, and how to open the admin pages."""
    from precompute_assets.core.api_keys import ApiKeys
    from precompute_assets.core.settings import ServiceSettings

    _, key = ApiKeys(create_engine_for(settings.store_url)).create("demo admin", tenant)
    service = ServiceSettings.from_env()
    print()
    print(f"Admin pages: make serve   (then http://{service.host}:{service.port}/admin); keep")
    print("             make ui running too, for refreshes and actions. Sign in as tenant")
    print(f"             {tenant}'s admin with this key (shown this once):")
    print(key)


def refresh_command(args: argparse.Namespace) -> int:
    from precompute_assets.core.reader import ReportReader
    from precompute_assets.core.settings import ExecutorSettings, ServiceSettings
    from precompute_assets.orchestration.on_demand import follow_run, request_refresh
    from precompute_assets.orchestration.runs import refreshable_state
    from precompute_assets.orchestration.webserver import DagsterWebserver

    settings = Settings.from_env()
    tool = get_tool(load_tools(), args.tool)
    state = refreshable_state(tool, args.scope, settings)
    webserver = DagsterWebserver(ServiceSettings.from_env().dagster_url)
    refresh = request_refresh(
        webserver,
        create_engine_for(settings.store_url),
        tool,
        args.scope,
        utilisation=state.utilisation,
        entity_count=state.entity_count,
        executors=ExecutorSettings.from_env(),
    )
    how = "already refreshing" if refresh.coalesced else "queued to refresh"
    page = f"{webserver.url}/runs/{refresh.run_id}"
    print(f"run {refresh.run_id} {how} {tool.name}/{args.scope} ({page})")
    if args.no_wait:
        return 0
    run = follow_run(webserver, refresh.run_id, print)
    if run.status != "SUCCESS":
        print(
            f"precompute: error: run {run.run_id} ended {run.status.lower()}; see it in the UI at "
            f"{webserver.url}/runs/{run.run_id}",
            file=sys.stderr,
        )
        return 1
    report = ReportReader.from_settings(settings, {tool.name: tool}).read(tool.name, args.scope)
    print(
        f"run {run.run_id} refreshed {tool.name}/{args.scope}: {report.header.row_count} rows, "
        f"{report.header.unused_count} unused"
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

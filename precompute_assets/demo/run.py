"""The demo: seed a source, register its scopes, and materialise every report through Dagster."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import DagsterEventType, DagsterInstance, ExecuteInProcessResult

from precompute_assets.contract import ReportTool
from precompute_assets.core.db import connect, create_engine_for
from precompute_assets.core.errors import RunFailedError
from precompute_assets.core.report_store import ReportHeader, ReportStore
from precompute_assets.core.settings import Settings
from precompute_assets.core.text import format_table
from precompute_assets.demo.source import DemoScale, generate_source
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource
from precompute_assets.orchestration.runs import materialise_scope, register_scopes


@dataclass(frozen=True)
class ScopeSummary:
    scope: str
    headers: dict[str, ReportHeader]  # by tool name


def run_demo(
    scale: DemoScale,
    settings: Settings,
    instance: DagsterInstance,
    tools: Mapping[str, ReportTool[Any]],
    progress: Callable[[str], None] = print,
) -> list[ScopeSummary]:
    """Seed the source, then compute every scope's report for every tool through Dagster."""
    progress(
        f"seeding {scale.tenants} tenants, {scale.spaces} spaces, {scale.work_items:,} work items"
    )
    summary = generate_source(settings.source_url, scale)
    progress(f"  {summary.field_values:,} field values in {summary.seconds:.1f}s at {summary.url}")

    # Runs read the settings from the environment, so no URL is baked into their records.
    defs = build_definitions(tools, PrecomputeResource())
    source = create_engine_for(settings.source_url, must_exist=True)
    with connect(source) as connection:
        scopes = {name: sorted(tool.catalogue.scopes(connection)) for name, tool in tools.items()}
    for name, tool in tools.items():
        register_scopes(instance, tool, scopes[name])

    total = sum(len(found) for found in scopes.values())
    done = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, tool in tools.items():
            for scope in scopes[name]:
                started = time.perf_counter()
                result = materialise_scope(defs, tool, scope, instance)
                done += 1
                outcome = "ok" if result.success else "FAILED"
                progress(
                    f"  [{done:>3}/{total}] {name:<18} {scope:<10} "
                    f"{outcome} in {time.perf_counter() - started:.2f}s (run {result.run_id[:8]})"
                )
                if not result.success:
                    raise RunFailedError(
                        f"run {result.run_id} for {name}/{scope} failed: "
                        f"{_first_failure(result)}; open it in the Dagster UI (make ui)"
                    )
    store = ReportStore(create_engine_for(settings.store_url))
    by_tool = {name: {h.scope: h for h in store.headers(name)} for name in tools}
    all_scopes = sorted({scope for found in scopes.values() for scope in found})
    return [
        ScopeSummary(
            scope, {name: by_tool[name][scope] for name in tools if scope in by_tool[name]}
        )
        for scope in all_scopes
    ]


def _first_failure(result: ExecuteInProcessResult) -> str:
    """The message of the run's first failed step, as the run page shows it."""
    for event in result.all_events:
        if event.event_type == DagsterEventType.STEP_FAILURE:
            return event.step_failure_data.error.message.strip().splitlines()[0]
    return "no step failed"


def format_summary(rows: list[ScopeSummary], tools: Mapping[str, ReportTool[Any]]) -> str:
    """A plain-text table: per scope, each tool's utilisation and unused count."""
    titles = ["scope"]
    for name in tools:
        titles += [f"{name} util", f"{name} unused"]
    titles.append("computed at (UTC)")
    table = []
    for row in rows:
        cells = [row.scope]
        for name in tools:
            header = row.headers.get(name)
            utilisation = header.utilisation if header else None
            cells.append("-" if utilisation is None else f"{utilisation:.0%}")
            cells.append("-" if header is None else str(header.unused_count))
        computed = max((h.computed_at for h in row.headers.values()), default=None)
        cells.append("-" if computed is None else time.strftime("%H:%M:%S", time.gmtime(computed)))
        table.append(cells)
    return format_table(titles, table)

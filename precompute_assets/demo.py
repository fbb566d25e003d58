"""The demo: seed a source, register its scopes, and materialise every report through Dagster."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import DagsterInstance

from precompute_assets.contract import ReportTool
from precompute_assets.db import connect, create_engine_for
from precompute_assets.definitions import build_definitions, report_job_name
from precompute_assets.demo_source import DemoScale, generate_source
from precompute_assets.factory import scopes_partitions
from precompute_assets.report_store import ReportHeader, ReportStore
from precompute_assets.resources import PrecomputeResource
from precompute_assets.settings import Settings

QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class ScopeSummary:
    scope: str
    headers: dict[str, ReportHeader]  # by tool name


def project_instance(project_dir: Path) -> DagsterInstance:
    """The persistent Dagster instance of the project (``DAGSTER_HOME``, else the project dir).

    ``dagster dev`` started with the same ``DAGSTER_HOME`` shows the runs made here.
    """
    if not os.environ.get("DAGSTER_HOME"):
        if not (project_dir / "dagster.yaml").exists():
            raise FileNotFoundError(
                f"no dagster.yaml in {project_dir}: run from the project root or set DAGSTER_HOME"
            )
        os.environ["DAGSTER_HOME"] = str(project_dir.resolve())
    return DagsterInstance.get()


def register_scopes(
    instance: DagsterInstance, tool: ReportTool[Any], scopes: list[str]
) -> list[str]:
    """Make the tool's partitions equal to ``scopes``; return the scopes added."""
    name = scopes_partitions(tool).name
    known = set(instance.get_dynamic_partitions(name))
    added = [scope for scope in scopes if scope not in known]
    removed = sorted(known - set(scopes))
    if added:
        instance.add_dynamic_partitions(name, added)
    for scope in removed:
        instance.delete_dynamic_partition(name, scope)
    return added


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

    precompute = PrecomputeResource(
        source_url=settings.source_url,
        store_url=settings.store_url,
        batch_size=settings.batch_size,
        max_shards=settings.max_shards,
    )
    defs = build_definitions(tools, precompute)
    source = create_engine_for(settings.source_url, must_exist=True)
    with connect(source) as connection:
        scopes = {name: sorted(tool.scopes(connection)) for name, tool in tools.items()}
    for name, tool in tools.items():
        register_scopes(instance, tool, scopes[name])

    total = sum(len(found) for found in scopes.values())
    done = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, tool in tools.items():
            job = defs.resolve_job_def(report_job_name(tool))
            for scope in scopes[name]:
                started = time.perf_counter()
                result = job.execute_in_process(
                    partition_key=scope,
                    instance=instance,
                    run_config=QUIET_RUN_CONFIG,
                    raise_on_error=False,
                )
                done += 1
                outcome = "ok" if result.success else "FAILED"
                progress(
                    f"  [{done:>3}/{total}] {name:<18} {scope:<10} "
                    f"{outcome} in {time.perf_counter() - started:.2f}s (run {result.run_id[:8]})"
                )
                if not result.success:
                    raise RuntimeError(
                        f"run {result.run_id} for {name}/{scope} failed; "
                        "open it in the Dagster UI for the error"
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


def format_summary(rows: list[ScopeSummary], tools: Mapping[str, ReportTool[Any]]) -> str:
    """A plain-text table: per scope, each tool's utilisation and unused count."""
    titles = ["scope"]
    for name in tools:
        titles += [f"{name} util", f"{name} unused"]
    titles.append("computed at (UTC)")
    table = [titles]
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
    widths = [max(len(line[i]) for line in table) for i in range(len(titles))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in table
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)

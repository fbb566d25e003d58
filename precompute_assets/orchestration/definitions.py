"""Everything that is deployed, assembled in one place: ``dagster dev`` loads ``defs``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetSelection,
    AssetSpec,
    Definitions,
    MetadataValue,
    RetryPolicy,
    define_asset_job,
)

from precompute_assets.contract import ReportTool
from precompute_assets.core.registry import Registry, discover, given
from precompute_assets.core.text import markdown_table
from precompute_assets.orchestration.assets import (
    COMPLETENESS_CHECK,
    DEFAULT_RETRY_POLICY,
    GROUP_NAME,
    MAX_RUNTIME_TAG,
    REPORT_IO_MANAGER,
    build_report_asset,
    report_asset_key,
    report_job_name,
    scopes_partitions,
)
from precompute_assets.orchestration.checks import build_freshness_check, build_freshness_job
from precompute_assets.orchestration.executors import precompute_executor
from precompute_assets.orchestration.io_managers import ReportIOManager, StepOutputIOManager
from precompute_assets.orchestration.remediation import build_remediation_job
from precompute_assets.orchestration.resources import PrecomputeResource
from precompute_assets.orchestration.sensors import (
    BASELINE_CRON,
    build_baseline_schedule,
    build_discovery_sensor,
    build_freshness_sensor,
    build_refresh_sensor,
)

logger = logging.getLogger("precompute")


def tools_spec(registry: Registry) -> AssetSpec:
    """``precompute_tools``: every tool found, as ``precompute tools`` lists them, in the UI."""
    failed = [entry.name for entry in registry.problems]
    return AssetSpec(
        "precompute_tools",
        group_name=GROUP_NAME,
        description="The report tools found: loaded, disabled, or left out and why."
        + (f" Left out: {', '.join(failed)}." if failed else ""),
        metadata={
            "tools": MetadataValue.md(markdown_table(Registry.TITLES, registry.rows())),
            "left_out": len(failed),
        },
    )


def report_resources(precompute: PrecomputeResource) -> dict[str, Any]:
    """What report assets need: the ``precompute`` resource, and the IO managers that keep their
    step outputs and their reports in the store database."""
    return {
        "precompute": precompute,
        "io_manager": StepOutputIOManager(store_url=precompute.store_url),
        REPORT_IO_MANAGER: ReportIOManager(store_url=precompute.store_url),
    }


def build_definitions(
    tools: Mapping[str, ReportTool[Any]] | None = None,
    precompute: PrecomputeResource | None = None,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    baseline_cron: str = BASELINE_CRON,
) -> Definitions:
    """Per tool: the report asset, its checks, a partitioned job, its sensors and schedule, and
    the job that applies and undoes its remediation, if it offers one.

    The environment's settings are validated here, so a bad one fails the code location's load
    with its name rather than a run later. A tool that fails to load is left out, logged, and
    listed with the others on the ``precompute_tools`` asset.
    """
    registry = discover() if tools is None else given(tools)
    tools = registry.tools
    for problem in registry.problems:
        logger.warning(f"tool {problem.name} ({problem.origin}) left out: {problem.problem}")
    precompute = precompute or PrecomputeResource()
    precompute.settings()
    runs, refresh = precompute.executor_settings(), precompute.refresh_settings()
    assets, checks, jobs, sensors, schedules = [], [], [], [], []
    for tool in tools.values():
        asset = build_report_asset(tool, retry_policy, runs.scopes_per_run)
        assets.append(asset)
        checks.append(build_freshness_check(tool))
        report_job = define_asset_job(
            report_job_name(tool),
            # report_fresh is recorded by the freshness job when freshness changes, not
            # trivially after each run.
            selection=AssetSelection.assets(asset).without_checks()
            | AssetSelection.checks(AssetCheckKey(report_asset_key(tool), COMPLETENESS_CHECK)),
            partitions_def=scopes_partitions(tool),
            description=f"Compute the {tool.name} report of one scope.",
            # Run monitoring stops a run past this (dagster.yaml's run_monitoring).
            tags={MAX_RUNTIME_TAG: str(runs.max_runtime_s)},
        )
        freshness_job = build_freshness_job(tool)
        jobs += [report_job, freshness_job]
        if tool.remediation is not None:
            jobs.append(build_remediation_job(tool, runs.max_runtime_s))
        # Sensors and the schedule launch the report asset as its page's Materialize does.
        sensors += [
            build_discovery_sensor(tool, refresh.sensor_interval_s),
            build_refresh_sensor(tool, refresh.sensor_interval_s),
            build_freshness_sensor(tool, freshness_job, refresh.sensor_interval_s),
        ]
        schedules.append(build_baseline_schedule(tool, baseline_cron))
    return Definitions(
        assets=[*assets, tools_spec(registry)],
        asset_checks=checks,
        jobs=jobs,
        sensors=sensors,
        schedules=schedules,
        # Every job, the UI's ad hoc materialisations and backfills included, chooses per run.
        executor=precompute_executor,
        resources=report_resources(precompute),
    )


defs = build_definitions()

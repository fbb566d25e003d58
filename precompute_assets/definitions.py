"""Everything that is deployed, assembled in one place: ``dagster dev`` loads ``defs``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import AssetSelection, Definitions, RetryPolicy, define_asset_job

from precompute_assets.checks import build_completeness_check, build_freshness_check
from precompute_assets.contract import ReportTool
from precompute_assets.executors import precompute_executor
from precompute_assets.factory import DEFAULT_RETRY_POLICY, build_report_asset, scopes_partitions
from precompute_assets.registry import load_tools
from precompute_assets.resources import PrecomputeResource
from precompute_assets.sensors import (
    BASELINE_CRON,
    build_baseline_schedule,
    build_discovery_sensor,
    build_refresh_sensor,
)
from precompute_assets.step_outputs import StepOutputIOManager


def report_job_name(tool: ReportTool[Any]) -> str:
    return f"{tool.name}_job"


def build_definitions(
    tools: Mapping[str, ReportTool[Any]] | None = None,
    precompute: PrecomputeResource | None = None,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    baseline_cron: str = BASELINE_CRON,
) -> Definitions:
    """Per tool: the report asset, its checks, a partitioned job, its sensors and schedule."""
    tools = load_tools() if tools is None else tools
    precompute = precompute or PrecomputeResource()
    assets, checks, jobs, sensors, schedules = [], [], [], [], []
    for tool in tools.values():
        asset = build_report_asset(tool, retry_policy)
        assets.append(asset)
        checks += [build_completeness_check(tool), build_freshness_check(tool)]
        job_name = report_job_name(tool)
        sensors += [build_discovery_sensor(tool, job_name), build_refresh_sensor(tool, job_name)]
        schedules.append(build_baseline_schedule(tool, job_name, baseline_cron))
        jobs.append(
            define_asset_job(
                job_name,
                selection=AssetSelection.assets(asset),
                partitions_def=scopes_partitions(tool),
                description=f"Compute the {tool.name} report of one scope.",
            )
        )
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        sensors=sensors,
        schedules=schedules,
        # Every job, the UI's ad hoc materialisations and backfills included, chooses per run.
        executor=precompute_executor,
        resources={
            "precompute": precompute,
            "io_manager": StepOutputIOManager(store_url=precompute.store_url),
        },
    )


defs = build_definitions()

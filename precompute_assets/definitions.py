"""Everything that is deployed, assembled in one place: ``dagster dev`` loads ``defs``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import AssetSelection, Definitions, RetryPolicy, define_asset_job

from precompute_assets.contract import ReportTool
from precompute_assets.factory import (
    DEFAULT_RETRY_POLICY,
    build_completeness_check,
    build_report_asset,
    scopes_partitions,
)
from precompute_assets.registry import load_tools
from precompute_assets.resources import PrecomputeResource


def report_job_name(tool: ReportTool[Any]) -> str:
    return f"{tool.name}_job"


def build_definitions(
    tools: Mapping[str, ReportTool[Any]] | None = None,
    precompute: PrecomputeResource | None = None,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> Definitions:
    """One report asset, completeness check and partitioned job per tool."""
    tools = load_tools() if tools is None else tools
    assets, checks, jobs = [], [], []
    for tool in tools.values():
        asset = build_report_asset(tool, retry_policy)
        assets.append(asset)
        checks.append(build_completeness_check(tool))
        jobs.append(
            define_asset_job(
                report_job_name(tool),
                selection=AssetSelection.assets(asset),
                partitions_def=scopes_partitions(tool),
                description=f"Compute the {tool.name} report of one scope.",
            )
        )
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        resources={"precompute": precompute or PrecomputeResource()},
    )


defs = build_definitions()

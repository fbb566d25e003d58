"""Sensors and schedules per tool: scope discovery, prioritised refresh, the monthly baseline."""

import json
import time
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    schedule,
    sensor,
)

from precompute_assets.checks import FRESHNESS_CHECK, freshness_metadata
from precompute_assets.contract import ReportTool
from precompute_assets.db import connect
from precompute_assets.executors import execution_run_config, executor_for
from precompute_assets.factory import report_asset_key, scopes_partitions
from precompute_assets.refresh import (
    Reason,
    RefreshRequest,
    ScopeState,
    is_high,
    is_stale,
    plan_baseline,
    plan_refresh,
    priority_order,
    run_key,
    scope_states,
)
from precompute_assets.resources import PrecomputeResource
from precompute_assets.settings import ExecutorSettings, RefreshSettings

IN_FLIGHT_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
BASELINE_CRON = "0 3 1 * *"  # 03:00 UTC on the first of every month


def refresh_tags(tool: ReportTool[Any], request: RefreshRequest) -> dict[str, str]:
    return {
        "dagster/priority": str(request.priority),
        "precompute/tool": tool.name,
        "precompute/reason": request.reason.value,
        "precompute/utilisation": f"{request.utilisation:.3f}",
    }


def run_request(tool: ReportTool[Any], request: RefreshRequest) -> RunRequest:
    settings = ExecutorSettings.from_env()
    return RunRequest(
        run_key=request.run_key,
        partition_key=request.scope,
        tags=refresh_tags(tool, request),
        run_config=execution_run_config(executor_for(request.entity_count, settings), settings),
    )


def in_flight_scopes(instance: DagsterInstance, tool: ReportTool[Any], job_name: str) -> set[str]:
    """Scopes with a queued or running run of this tool's report, in one query."""
    key = report_asset_key(tool)
    return {
        run.tags["dagster/partition"]
        for run in instance.get_runs(RunsFilter(statuses=IN_FLIGHT_STATUSES))
        if "dagster/partition" in run.tags
        and (run.job_name == job_name or key in (run.asset_selection or ()))
    }


def registered_states(
    instance: DagsterInstance, tool: ReportTool[Any], precompute: PrecomputeResource
) -> list[ScopeState]:
    """Scope states for the scopes that are both in the source and registered as partitions."""
    registered = set(instance.get_dynamic_partitions(scopes_partitions(tool).name))
    states = scope_states(tool, precompute.source_engine(), precompute.store())
    return [state for state in states if state.scope in registered]


def build_discovery_sensor(tool: ReportTool[Any], job_name: str) -> SensorDefinition:
    """Keep the tool's partitions equal to the source's scopes; request new scopes' first reports.

    A scope deleted from the source loses its partition and its stored report in the same tick:
    a report about a scope that no longer exists would only mislead remediation tools.
    """
    partitions = scopes_partitions(tool)

    @sensor(
        name=f"{tool.name}_discovery_sensor",
        job_name=job_name,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"Adds and removes {tool.name} scopes as the source gains and loses them.",
    )
    def discovery_sensor(
        context: SensorEvaluationContext, precompute: PrecomputeResource
    ) -> SensorResult:
        settings = RefreshSettings.from_env()
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        with connect(precompute.source_engine()) as source:
            scopes = tool.scopes(source)
        added = [scope for scope in scopes if scope not in known]
        removed = sorted(known - set(scopes))
        for scope in removed:
            precompute.store().delete(tool.name, scope)
        states = scope_states(tool, precompute.source_engine(), precompute.store(), added)
        first = priority_order(states, settings)[: settings.budget]
        requests = [
            RefreshRequest(state.scope, Reason.MISSING, state.utilisation, run_key(state))
            for state in first
        ]
        context.log.info(f"{len(added)} scopes added, {len(removed)} removed")
        return SensorResult(
            run_requests=[run_request(tool, request) for request in requests],
            dynamic_partitions_requests=[
                *([partitions.build_add_request(added)] if added else []),
                *([partitions.build_delete_request(removed)] if removed else []),
            ],
        )

    return discovery_sensor


def build_refresh_sensor(tool: ReportTool[Any], job_name: str) -> SensorDefinition:
    """Request the most pressing refreshes each tick, and report per-scope freshness.

    Freshness evaluations are emitted for scopes above the threshold whose stale flag changed
    since the last tick (the cursor holds the stale set), so the event log grows with changes,
    not with ticks.
    """
    asset_key = report_asset_key(tool)

    @sensor(
        name=f"{tool.name}_refresh_sensor",
        job_name=job_name,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"Refreshes {tool.name} reports by utilisation, within a budget per tick.",
    )
    def refresh_sensor(
        context: SensorEvaluationContext, precompute: PrecomputeResource
    ) -> SensorResult:
        settings = RefreshSettings.from_env()
        now = time.time()
        states = registered_states(context.instance, tool, precompute)
        in_flight = in_flight_scopes(context.instance, tool, job_name)
        requests = plan_refresh(states, settings, in_flight=in_flight, now=now)

        high = [state for state in states if is_high(state, settings)]
        stale = {state.scope for state in high if is_stale(state, settings, now)}
        # On the first tick every high scope is reported; later, only those that flipped.
        before = set(json.loads(context.cursor)["stale"]) if context.cursor else None
        evaluations = [
            AssetCheckEvaluation(
                asset_key=asset_key,
                check_name=FRESHNESS_CHECK,
                passed=state.scope not in stale,
                severity=AssetCheckSeverity.WARN,
                partition=state.scope,
                metadata=freshness_metadata(state, now),
            )
            for state in high
            if before is None or (state.scope in stale) != (state.scope in before)
        ]
        return SensorResult(
            run_requests=[run_request(tool, request) for request in requests],
            asset_events=evaluations,
            cursor=json.dumps({"stale": sorted(stale)}),
        )

    return refresh_sensor


def build_baseline_schedule(
    tool: ReportTool[Any], job_name: str, cron: str = BASELINE_CRON
) -> ScheduleDefinition:
    """The periodic sweep that keeps low-utilisation scopes from going stale forever."""

    @schedule(
        name=f"{tool.name}_baseline_schedule",
        job_name=job_name,
        cron_schedule=cron,
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Recomputes aged {tool.name} reports of every utilisation, within a budget.",
    )
    def baseline_schedule(context: ScheduleEvaluationContext, precompute: PrecomputeResource):
        states = registered_states(context.instance, tool, precompute)
        in_flight = in_flight_scopes(context.instance, tool, job_name)
        requests = plan_baseline(states, RefreshSettings.from_env(), in_flight=in_flight)
        return [run_request(tool, request) for request in requests]

    return baseline_schedule

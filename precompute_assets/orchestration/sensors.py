"""Sensors and schedules per tool: scope discovery, prioritised refresh, the monthly baseline."""

import time
from collections.abc import Collection
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetSelection,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    JobDefinition,
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

from precompute_assets.contract import ReportTool
from precompute_assets.core.db import connect
from precompute_assets.core.refresh import (
    Reason,
    RefreshRequest,
    ScopeState,
    due_reason,
    plan_baseline,
    plan_refresh,
    priority_order,
    run_key,
    scope_states,
)
from precompute_assets.core.scope_index import KnownScope, ScopeIndex
from precompute_assets.core.settings import ExecutorSettings, RefreshSettings
from precompute_assets.orchestration.assets import (
    MAX_RUNTIME_TAG,
    report_asset_key,
    report_job_name,
    scopes_partitions,
)
from precompute_assets.orchestration.checks import (
    COMPLETENESS_CHECK,
    freshness_changes,
    recorded_freshness,
)
from precompute_assets.orchestration.executors import execution_run_config, executor_for
from precompute_assets.orchestration.resources import PrecomputeResource

IN_FLIGHT_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
# Dagster's asset job, which an asset page's Materialize launches: every refresh shows it.
ASSET_JOB = "__ASSET_JOB"
BASELINE_CRON = "0 3 1 * *"  # 03:00 UTC on the first of every month
# Above every refresh (on-demand ones are 1,000): freshness is recorded before refreshes start.
FRESHNESS_PRIORITY = 2_000


def refresh_tags(tool: ReportTool[Any], request: RefreshRequest) -> dict[str, str]:
    return {
        "dagster/priority": str(request.priority),
        "precompute/tool": tool.name,
        "precompute/reason": request.reason.value,
        "precompute/utilisation": f"{request.utilisation:.3f}",
    }


def run_request(
    tool: ReportTool[Any], request: RefreshRequest, settings: ExecutorSettings
) -> RunRequest:
    """A run of the tool's report asset and its completeness check for one scope: the run the
    asset page's *Materialize* launches, with the sensor's tags, deadline and executor."""
    key = report_asset_key(tool)
    return RunRequest(
        asset_selection=[key],
        asset_check_keys=[AssetCheckKey(key, COMPLETENESS_CHECK)],
        run_key=request.run_key,
        partition_key=request.scope,
        tags={**refresh_tags(tool, request), MAX_RUNTIME_TAG: str(settings.max_runtime_s)},
        run_config=execution_run_config(executor_for(request.entity_count, settings), settings),
    )


def report_selection(tool: ReportTool[Any]) -> AssetSelection:
    """What the sensors launch: the report asset. Given as ``asset_selection``, it runs in
    Dagster's asset job; a ``target`` would make a job of the sensor's own."""
    return AssetSelection.assets(report_asset_key(tool))


def in_flight_scopes(instance: DagsterInstance, tool: ReportTool[Any]) -> set[str]:
    """Scopes with a queued or running run of this tool's report, in one query, whichever job
    the run is of (the asset job, the tool's job from the launchpad or the command line)."""
    key = report_asset_key(tool)
    return {
        run.tags["dagster/partition"]
        for run in instance.get_runs(RunsFilter(statuses=IN_FLIGHT_STATUSES))
        if "dagster/partition" in run.tags
        and (run.job_name == report_job_name(tool) or key in (run.asset_selection or ()))
    }


def registered_states(
    instance: DagsterInstance,
    tool: ReportTool[Any],
    precompute: PrecomputeResource,
    now: float | None = None,
) -> list[ScopeState]:
    """Scope states for the scopes that are both in the source and registered as partitions,
    recorded in the store's scope index for readers (the report service) that never ask the
    source."""
    registered = set(instance.get_dynamic_partitions(scopes_partitions(tool).name))
    now = time.time() if now is None else now
    states = scope_states(tool, precompute.source_engine(), precompute.store(), now=now)
    states = [state for state in states if state.scope in registered]
    ScopeIndex(precompute.store().engine).record(
        KnownScope(tool.name, s.scope, s.tenant, s.utilisation, s.watermark, now) for s in states
    )
    return states


def build_discovery_sensor(tool: ReportTool[Any], interval_s: int) -> SensorDefinition:
    """Keep the tool's partitions equal to the source's scopes; request new scopes' first reports.

    A scope deleted from the source loses its partition and its stored report in the same tick:
    a report about a scope that no longer exists would only mislead remediation tools.
    """
    partitions = scopes_partitions(tool)

    @sensor(
        name=f"{tool.name}_discovery_sensor",
        asset_selection=report_selection(tool),
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"Adds and removes {tool.name} scopes as the source gains and loses them.",
    )
    def discovery_sensor(
        context: SensorEvaluationContext, precompute: PrecomputeResource
    ) -> SensorResult:
        settings, executors = precompute.refresh_settings(), precompute.executor_settings()
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        with connect(precompute.source_engine()) as source:
            scopes = list(tool.catalogue.scopes(source))
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
            run_requests=[run_request(tool, request, executors) for request in requests],
            dynamic_partitions_requests=[
                *([partitions.build_add_request(added)] if added else []),
                *([partitions.build_delete_request(removed)] if removed else []),
            ],
        )

    return discovery_sensor


def build_refresh_sensor(tool: ReportTool[Any], interval_s: int) -> SensorDefinition:
    """Request the most pressing refreshes each tick; a tick that requests nothing says why."""

    @sensor(
        name=f"{tool.name}_refresh_sensor",
        asset_selection=report_selection(tool),
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"Refreshes {tool.name} reports by utilisation, within a budget per tick.",
    )
    def refresh_sensor(
        context: SensorEvaluationContext, precompute: PrecomputeResource
    ) -> SensorResult:
        settings, executors = precompute.refresh_settings(), precompute.executor_settings()
        now = time.time()
        states = registered_states(context.instance, tool, precompute, now)
        in_flight = in_flight_scopes(context.instance, tool)
        requests = plan_refresh(states, settings, in_flight=in_flight, now=now)
        counts = tick_counts(states, settings, in_flight, len(requests), now)
        if not requests:
            return SensorResult(skip_reason=counts)
        context.log.info(counts)
        return SensorResult(run_requests=[run_request(tool, r, executors) for r in requests])

    return refresh_sensor


def build_freshness_sensor(
    tool: ReportTool[Any], freshness_job: JobDefinition, interval_s: int
) -> SensorDefinition:
    """Keep ``report_fresh`` true: when a scope's freshness differs from its last recorded
    evaluation, request one run of the freshness job for those scopes (one at a time), ahead
    of refreshes in the queue."""

    @sensor(
        name=f"{tool.name}_freshness_sensor",
        job=freshness_job,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"Records report_fresh of the {tool.name} scopes whose freshness changed.",
    )
    def freshness_sensor(
        context: SensorEvaluationContext, precompute: PrecomputeResource
    ) -> SensorResult:
        if _has_run_in_flight(context.instance, freshness_job.name):
            return SensorResult(skip_reason="a freshness run is in flight")
        settings, now = precompute.refresh_settings(), time.time()
        states = registered_states(context.instance, tool, precompute, now)
        changed = freshness_changes(
            states, recorded_freshness(context.instance, tool), settings, now
        )
        if not changed:
            return SensorResult(
                skip_reason=f"{len(states)} scopes; freshness recorded for every scope"
            )
        context.log.info(f"{len(changed)} of {len(states)} scopes changed freshness")
        return SensorResult(run_requests=[freshness_request(tool, changed)])

    return freshness_sensor


def freshness_request(tool: ReportTool[Any], changed: list[ScopeState]) -> RunRequest:
    """One run of the freshness job for the scopes whose freshness changed, ahead of refreshes."""
    op_name = f"{tool.name}_record_freshness"
    return RunRequest(
        run_config={"ops": {op_name: {"config": {"scopes": [s.scope for s in changed]}}}},
        tags={"dagster/priority": str(FRESHNESS_PRIORITY), "precompute/tool": tool.name},
    )


def tick_counts(
    states: list[ScopeState],
    settings: RefreshSettings,
    in_flight: Collection[str],
    requested: int,
    now: float,
) -> str:
    """What a refresh tick saw: scopes, due, due with a run in flight, due over the budget."""
    due = [state.scope for state in states if due_reason(state, settings, now) is not None]
    waiting = sum(1 for scope in due if scope in in_flight)
    over = len(due) - waiting - requested
    return (
        f"{len(states)} scopes, {len(due)} due, {waiting} in flight, {over} over budget, "
        f"{requested} requested"
    )


def _has_run_in_flight(instance: DagsterInstance, job_name: str) -> bool:
    return bool(
        instance.get_run_ids(RunsFilter(job_name=job_name, statuses=IN_FLIGHT_STATUSES), limit=1)
    )


def build_baseline_schedule(tool: ReportTool[Any], cron: str = BASELINE_CRON) -> ScheduleDefinition:
    """The periodic sweep that keeps low-utilisation scopes from going stale forever."""

    @schedule(
        name=f"{tool.name}_baseline_schedule",
        job_name=ASSET_JOB,
        cron_schedule=cron,
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Recomputes aged {tool.name} reports of every utilisation, within a budget.",
    )
    def baseline_schedule(context: ScheduleEvaluationContext, precompute: PrecomputeResource):
        states = registered_states(context.instance, tool, precompute)
        in_flight = in_flight_scopes(context.instance, tool)
        requests = plan_baseline(states, precompute.refresh_settings(), in_flight=in_flight)
        executors = precompute.executor_settings()
        return [run_request(tool, request, executors) for request in requests]

    return baseline_schedule

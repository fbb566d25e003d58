"""Sensors and schedules per tool: scope discovery, prioritised refresh, freshness, the monthly
baseline.

A tick reads what changed, not the fleet: each sensor first reads the catalogue's changes since
the tool's cursor into the store's per-scope rows (``core/fleet_state.py``), then asks those rows
one indexed question. Dagster is asked only about runs in flight for this tool, and, when small
scopes are to share a run, for the partitions' order.
"""

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
from precompute_assets.core.fleet_state import FleetState
from precompute_assets.core.refresh import (
    Reason,
    RefreshRequest,
    RunGroup,
    ScopeState,
    group_requests,
    plan_baseline,
    plan_refresh,
    run_key,
)
from precompute_assets.core.settings import ExecutorSettings
from precompute_assets.orchestration.assets import (
    COMPLETENESS_CHECK,
    MAX_RUNTIME_TAG,
    report_asset_key,
    report_job_name,
    scopes_partitions,
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
TOOL_TAG = "precompute/tool"
PARTITION_TAG = "dagster/partition"
# A run over several partitions, as a backfill's runs are tagged.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
BASELINE_CRON = "0 3 1 * *"  # 03:00 UTC on the first of every month
# Above every refresh (on-demand ones are 1,000): freshness is recorded before refreshes start.
FRESHNESS_PRIORITY = 2_000
# Up to this many scopes are looked up in Dagster's partitions one by one; more, in one read.
FEW_LOOKUPS = 20
# Scopes one freshness run records at most; more wait for the next tick.
FRESHNESS_PER_RUN = 10_000


def refresh_tags(tool: ReportTool[Any], request: RefreshRequest | RunGroup) -> dict[str, str]:
    return {
        "dagster/priority": str(request.priority),
        TOOL_TAG: tool.name,
        "precompute/reason": request.reason_tag,
        "precompute/utilisation": f"{request.utilisation:.3f}",
    }


def run_request(tool: ReportTool[Any], group: RunGroup, settings: ExecutorSettings) -> RunRequest:
    """A run of the tool's report asset and its completeness check for one scope or a range of
    them: the run the asset page's *Materialize* (or a backfill) launches, with the sensor's
    tags, deadline and executor."""
    key = report_asset_key(tool)
    tags = {**refresh_tags(tool, group), MAX_RUNTIME_TAG: str(settings.max_runtime_s)}
    first, last = group.scopes[0], group.scopes[-1]
    if first != last:
        tags = {**tags, RANGE_START_TAG: first, RANGE_END_TAG: last}
    return RunRequest(
        asset_selection=[key],
        asset_check_keys=[AssetCheckKey(key, COMPLETENESS_CHECK)],
        run_key=group.run_key,
        partition_key=first if first == last else None,
        tags=tags,
        run_config=execution_run_config(executor_for(group.entity_count, settings), settings),
    )


def report_selection(tool: ReportTool[Any]) -> AssetSelection:
    """What the sensors launch: the report asset. Given as ``asset_selection``, it runs in
    Dagster's asset job; a ``target`` would make a job of the sensor's own."""
    return AssetSelection.assets(report_asset_key(tool))


def in_flight_scopes(instance: DagsterInstance, tool: ReportTool[Any]) -> set[str]:
    """Scopes with a queued or running run of this tool's report, whoever launched it: the
    runs tagged with the tool (sensors, the command line, the service) and the asset page's and
    the launchpad's runs of its report. A few queries, about runs in flight only."""
    key = report_asset_key(tool)
    runs = {
        run.run_id: run
        for runs_filter in (
            RunsFilter(statuses=IN_FLIGHT_STATUSES, tags={TOOL_TAG: tool.name}),
            RunsFilter(statuses=IN_FLIGHT_STATUSES, job_name=report_job_name(tool)),
            RunsFilter(statuses=IN_FLIGHT_STATUSES, job_name=ASSET_JOB),
        )
        for run in instance.get_runs(runs_filter)
        if run.job_name == report_job_name(tool) or key in (run.asset_selection or ())
    }
    scopes = {run.tags[PARTITION_TAG] for run in runs.values() if PARTITION_TAG in run.tags}
    ranges = [
        (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG])
        for run in runs.values()
        if RANGE_START_TAG in run.tags and RANGE_END_TAG in run.tags
    ]
    if ranges:
        order = partition_order(instance, tool)
        position = {scope: index for index, scope in enumerate(order)}
        for first, last in ranges:
            if first in position and last in position:
                scopes.update(order[position[first] : position[last] + 1])
    return scopes


def partition_order(instance: DagsterInstance, tool: ReportTool[Any]) -> list[str]:
    """The tool's partitions in Dagster's order, which ranges of partitions follow."""
    return list(instance.get_dynamic_partitions(scopes_partitions(tool).name))


def grouped_requests(
    instance: DagsterInstance,
    tool: ReportTool[Any],
    requests: list[RefreshRequest],
    settings: ExecutorSettings,
    order: list[str] | None = None,
) -> list[RunRequest]:
    """The run requests for ``requests``: small scopes that are neighbours among the partitions
    share a run, large ones get one each. The partitions' order is read only when two small
    scopes could share a run."""
    # A scope that needs the large-scope executor runs alone, whatever the sharing limit.
    limit = min(settings.shared_run_entities, settings.large_scope_entities)
    small = [r for r in requests if r.entity_count is None or r.entity_count < limit]
    if order is None and len(small) > 1 and settings.scopes_per_run > 1:
        order = partition_order(instance, tool)
    groups = group_requests(
        requests, order, scopes_per_run=settings.scopes_per_run, shared_run_entities=limit
    )
    return [run_request(tool, group, settings) for group in groups]


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
        fleet, store = precompute.fleet(), precompute.store()
        synced = fleet.sync(tool, precompute.source_engine())
        new, gone = fleet.unregistered(tool, settings, time.time()), fleet.gone(tool)
        added = [state.scope for state in new]
        removed = sorted(
            set(gone) | _strays(context.instance, tool, fleet) if synced.complete else gone
        )
        for scope in removed:
            store.delete(tool.name, scope)
        fleet.forget(tool, gone)
        fleet.mark_registered(tool, added, registered=True)
        # Added in this order, after every partition there is, so the first ones are neighbours;
        # one that was a partition already (added by hand) keeps its place and its run.
        first = [
            RefreshRequest(state.scope, Reason.MISSING, state.utilisation, run_key(state))
            for state in new[: settings.budget]
            if state.header is None
        ]
        known = {
            r.scope
            for r in first
            if context.instance.has_dynamic_partition(partitions.name, r.scope)
        }
        requests = [r for r in first if r.scope not in known]
        order = [r.scope for r in requests]
        requests += [r for r in first if r.scope in known]
        context.log.info(f"{len(added)} scopes added, {len(removed)} removed")
        return SensorResult(
            run_requests=grouped_requests(context.instance, tool, requests, executors, order),
            dynamic_partitions_requests=[
                *([partitions.build_add_request(added)] if added else []),
                *([partitions.build_delete_request(removed)] if removed else []),
            ],
        )

    return discovery_sensor


def _with_partitions(
    instance: DagsterInstance, tool: ReportTool[Any], fleet: FleetState, states: list[ScopeState]
) -> tuple[list[ScopeState], set[str]]:
    """``states`` of scopes that are partitions, and the scopes that are not. A scope the
    discovery sensor has not registered may be a partition all the same (added by hand, by the
    command line): Dagster is asked about those few, and the ones it knows are marked."""
    unknown = fleet.unregistered_among(tool, [state.scope for state in states])
    name = scopes_partitions(tool).name
    if len(unknown) > FEW_LOOKUPS:
        found = sorted(unknown & set(partition_order(instance, tool)))
    else:
        found = [scope for scope in sorted(unknown) if instance.has_dynamic_partition(name, scope)]
    fleet.mark_registered(tool, found, registered=True)
    missing = unknown - set(found)
    return [state for state in states if state.scope not in missing], missing


def _strays(instance: DagsterInstance, tool: ReportTool[Any], fleet: FleetState) -> set[str]:
    """Partitions of no scope the source holds (added by hand, or left from another store):
    looked for when the catalogue listed every scope, not on every tick."""
    return set(partition_order(instance, tool)) - fleet.live_scopes(tool)


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
        fleet, now = precompute.fleet(), time.time()
        fleet.sync(tool, precompute.source_engine())
        in_flight = in_flight_scopes(context.instance, tool)
        due = fleet.due(tool, settings, now, settings.budget + len(in_flight))
        states, missing = _with_partitions(context.instance, tool, fleet, due)
        requests = plan_refresh(states, settings, in_flight=in_flight, now=now)
        counts = fleet.counts(tool, settings, now)
        message = tick_counts(counts.scopes, counts.due, states, in_flight, len(requests))
        if missing:
            message += f"; {len(missing)} due without a partition (the discovery sensor adds them)"
        if not requests:
            return SensorResult(skip_reason=message)
        context.log.info(message)
        fleet.mark_requested(tool, {r.scope: r.run_key for r in requests}, now)
        return SensorResult(
            run_requests=grouped_requests(context.instance, tool, requests, executors)
        )

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
        settings, fleet, now = precompute.refresh_settings(), precompute.fleet(), time.time()
        fleet.sync(tool, precompute.source_engine())
        changed, _ = _with_partitions(
            context.instance,
            tool,
            fleet,
            fleet.freshness_changed(tool, settings, now, FRESHNESS_PER_RUN),
        )
        scopes = fleet.counts(tool, settings, now).scopes
        if not changed:
            return SensorResult(skip_reason=f"{scopes} scopes; freshness recorded for every scope")
        context.log.info(f"{len(changed)} of {scopes} scopes changed freshness")
        return SensorResult(run_requests=[freshness_request(tool, changed)])

    return freshness_sensor


def freshness_request(tool: ReportTool[Any], changed: list[ScopeState]) -> RunRequest:
    """One run of the freshness job for the scopes whose freshness changed, ahead of refreshes."""
    op_name = f"{tool.name}_record_freshness"
    return RunRequest(
        run_config={"ops": {op_name: {"config": {"scopes": [s.scope for s in changed]}}}},
        tags={"dagster/priority": str(FRESHNESS_PRIORITY), TOOL_TAG: tool.name},
    )


def tick_counts(
    scopes: int, due: int, fetched: list[ScopeState], in_flight: Collection[str], requested: int
) -> str:
    """What a refresh tick saw: scopes, due, due with a run in flight, due over the budget."""
    waiting = sum(1 for state in fetched if state.scope in in_flight)
    over = max(0, due - waiting - requested)
    return (
        f"{scopes} scopes, {due} due, {waiting} in flight, {over} over budget, "
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
        settings, fleet, now = precompute.refresh_settings(), precompute.fleet(), time.time()
        fleet.sync(tool, precompute.source_engine())
        in_flight = in_flight_scopes(context.instance, tool)
        aged = fleet.aged(tool, settings, now, settings.baseline_budget + len(in_flight))
        states, _ = _with_partitions(context.instance, tool, fleet, aged)
        requests = plan_baseline(states, settings, in_flight=in_flight, now=now)
        fleet.mark_requested(tool, {r.scope: r.run_key for r in requests}, now)
        executors = precompute.executor_settings()
        return grouped_requests(context.instance, tool, requests, executors)

    return baseline_schedule

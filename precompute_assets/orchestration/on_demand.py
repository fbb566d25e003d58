"""On-demand refreshes: submitted to the instance's run queue, coalesced per scope.

A refresh is the run the asset page's *Materialize* launches (Dagster's asset job, the report
asset and its ``report_complete`` check, the scope as partition) with the refresh sensor's tags
at on-demand priority, submitted through the webserver to the queued run coordinator: the queue's
limits and priorities apply to it as to every other run, and the daemon starts it. While a run
computing the scope is queued or running, whoever asks gets that run instead of a new one: the
scope's row in the store is locked across the check and the launch (``core/refresh_requests.py``),
so this holds across service workers, machines and ``precompute refresh`` at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from precompute_assets.contract import ReportTool
from precompute_assets.core.refresh import Reason, RefreshRequest, RunGroup
from precompute_assets.core.refresh_requests import locked_refresh_request
from precompute_assets.core.settings import ExecutorSettings
from precompute_assets.orchestration.assets import (
    report_asset_key,
    report_job_name,
    scopes_partitions,
)
from precompute_assets.orchestration.sensors import (
    ASSET_JOB,
    RANGE_END_TAG,
    RANGE_START_TAG,
    run_request,
)
from precompute_assets.orchestration.webserver import (
    IN_FLIGHT,
    TERMINAL,
    DagsterWebserver,
    RunInfo,
)

PARTITION_TAG = "dagster/partition"


@dataclass(frozen=True)
class Refresh:
    """The run that refreshes a scope; whether this request joined it rather than launched it."""

    run_id: str
    status: str
    coalesced: bool


def covering_run(webserver: DagsterWebserver, tool: ReportTool[Any], scope: str) -> RunInfo | None:
    """The queued or running run that computes ``scope``'s report of ``tool``, if any.

    Whichever launched it: this service or command, the sensors and the schedule (Dagster's
    asset job), the launchpad (the tool's job). A run of one partition carries it in its
    ``dagster/partition`` tag; runs over several scopes (a partition range, tags
    ``dagster/asset_partition_range_start`` and ``_end``) cover it when it lies in their
    range, in the partitions' order (asked for only while such a run is in flight).
    """
    asset = report_asset_key(tool).to_user_string()

    def computes_tool(run: RunInfo) -> bool:
        return run.job_name == report_job_name(tool) or asset in run.asset_keys

    for run in webserver.runs(IN_FLIGHT, {PARTITION_TAG: scope}):
        if computes_tool(run):
            return run
    ranged = [
        run
        for run in webserver.runs(IN_FLIGHT, {})
        if RANGE_START_TAG in run.tags and RANGE_END_TAG in run.tags and computes_tool(run)
    ]
    if not ranged:
        return None
    order = webserver.partition_keys(report_asset_key(tool).path)
    position = {key: at for at, key in enumerate(order)}
    for run in ranged:
        first, last = position.get(run.tags[RANGE_START_TAG]), position.get(run.tags[RANGE_END_TAG])
        if first is not None and last is not None and first <= position.get(scope, -1) <= last:
            return run
    return None


def request_refresh(
    webserver: DagsterWebserver,
    store: Engine,
    tool: ReportTool[Any],
    scope: str,
    *,
    utilisation: float,
    entity_count: int | None,
    executors: ExecutorSettings,
) -> Refresh:
    """The run refreshing ``scope``: the one in flight, else a new one on the run queue.

    ``utilisation`` tags the run; ``entity_count`` (of the scope's last plan, if any) chooses its
    executor, as the refresh sensor chooses. DagsterUnavailableError if the webserver does not
    answer, or if no daemon would start a new run.
    """
    with locked_refresh_request(store, tool.name, scope) as held:
        running = covering_run(webserver, tool, scope)
        if running is not None:
            return Refresh(running.run_id, running.status, coalesced=True)
        webserver.check_daemon()
        request = RefreshRequest(scope, Reason.ON_DEMAND, utilisation, "", entity_count)
        run_id = webserver.launch(execution_params(webserver, tool, request, executors))
        held.record(run_id)
    return Refresh(run_id, "QUEUED", coalesced=False)


def execution_params(
    webserver: DagsterWebserver,
    tool: ReportTool[Any],
    request: RefreshRequest,
    executors: ExecutorSettings,
) -> dict[str, Any]:
    """What the asset page's *Materialize* submits for one partition, with the sensor's tags,
    deadline and executor (``sensors.run_request``)."""
    wanted = run_request(tool, RunGroup([request]), executors)
    repository = webserver.repository_of(report_asset_key(tool).path)
    webserver.add_partition(repository, scopes_partitions(tool).name, request.scope)
    tags = {**wanted.tags, PARTITION_TAG: request.scope}
    return {
        "selector": {
            **repository,
            "pipelineName": ASSET_JOB,
            "assetSelection": [{"path": key.path} for key in wanted.asset_selection or ()],
            "assetCheckSelection": [
                {"assetKey": {"path": check.asset_key.path}, "name": check.name}
                for check in wanted.asset_check_keys or ()
            ],
        },
        "runConfigData": wanted.run_config,
        "mode": "default",
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }


def follow_run(
    webserver: DagsterWebserver,
    run_id: str,
    progress: Callable[[str], None],
    poll_s: float = 1.0,
) -> RunInfo:
    """Wait until the run ends, telling ``progress`` of its status and each step that ends."""
    cursor, status = None, None
    while True:
        run = webserver.run(run_id)
        if run is None:
            raise LookupError(f"no run {run_id} on the Dagster instance")
        events, cursor = webserver.events(run_id, cursor)
        for event in events:
            if event.kind in ("ExecutionStepSuccessEvent", "ExecutionStepFailureEvent"):
                outcome = "done" if event.kind == "ExecutionStepSuccessEvent" else "FAILED"
                progress(f"  {event.step_key}: {outcome}")
        if run.status != status:
            status = run.status
            progress(f"run {run_id} {status.lower()}")
        if run.status in TERMINAL:
            return run
        time.sleep(poll_s)

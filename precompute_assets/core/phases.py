"""The three phases of one job, without Dagster: the ops in ``factory.py`` call these.

Keeping them plain functions lets the property-based tests drive the exact code a run executes,
delivering, redelivering, losing and reordering batches at will.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from precompute_assets.contract import Batch, ReportTool, ScopeNotFoundError
from precompute_assets.core.db import connect
from precompute_assets.core.errors import DatabaseUnavailableError, ScanError
from precompute_assets.core.ledger import OPEN, Ledger
from precompute_assets.core.plan import JobPlan, Shard
from precompute_assets.core.report_store import ReportHeader, ReportStore
from precompute_assets.core.rows import validate_report
from precompute_assets.core.window import reference_params

# Failures worth another attempt: the database or the network, not the tool or the data.
TRANSIENT_ERRORS = (
    sa.exc.OperationalError,
    sa.exc.DisconnectionError,
    DatabaseUnavailableError,
    OSError,
)


@dataclass(frozen=True)
class ShardResult:
    shard: int
    batches_scanned: int
    batches_skipped: int
    seconds: float
    job_status: str = OPEN  # anything else: the shard found its job closed and scanned nothing


@dataclass(frozen=True)
class FinalisedReport:
    header: ReportHeader
    rows: pd.DataFrame
    rescanned: list[int]  # planned batches whose contribution the ledger had lost or never got


def open_job(
    tool: ReportTool[Any],
    scope: str,
    source: Engine,
    ledger: Ledger,
    batch_size: int,
    now: float | None = None,
) -> JobPlan:
    """Initialise: bound the job in the source, then open or resume it in the ledger.

    A new job's params gain its reference times (``window.reference_params``).
    """
    now = time.time() if now is None else now
    with connect(source) as connection:
        extent = tool.catalogue.initialise(connection, scope)
    return ledger.open_job(tool.name, scope, extent, batch_size, reference_params(tool, now))


def scan_and_record(
    tool: ReportTool[Any], source: Connection, ledger: Ledger, plan: JobPlan, batch: Batch
) -> Any:
    """Scan one batch and checkpoint its contribution under its key.

    A database or network error is raised as it is, for the step's retries; anything else the
    tool raised is a ``ScanError`` naming the tool, scope and batch, which no retry can mend.
    """
    try:
        contribution = tool.scan(source, batch)
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:
        raise ScanError(
            f"tool {tool.name!r} failed to scan scope {batch.scope!r}, batch {batch.index} "
            f"(keys {batch.first_key}..{batch.last_key}): {error}"
        ) from error
    ledger.record(plan, batch.index, contribution)
    return contribution


def run_shard(
    tool: ReportTool[Any], plan: JobPlan, shard: Shard, source: Engine, ledger: Ledger
) -> ShardResult:
    """Scan the shard's batches in order, skipping those already in the ledger.

    A shard whose job another run has closed (or a newer job replaced) scans nothing. One source
    connection serves the whole shard: opening one per batch costs more than a small batch's
    query.
    """
    started = time.perf_counter()
    status = ledger.status(plan)
    if status != OPEN:
        return ShardResult(shard.index, 0, 0, round(time.perf_counter() - started, 4), status)
    recorded = ledger.recorded(plan, shard.batch_indices)
    todo = [index for index in shard.batch_indices if index not in recorded]
    with connect(source) as connection:
        for index in todo:
            scan_and_record(tool, connection, ledger, plan, plan.batch(index))
    seconds = round(time.perf_counter() - started, 4)
    return ShardResult(shard.index, len(todo), len(shard.batch_indices) - len(todo), seconds)


def finalise_job(
    tool: ReportTool[Any],
    plan: JobPlan,
    source: Engine,
    ledger: Ledger,
    store: ReportStore,
    *,
    shard_count: int,
    run_id: str | None = None,
    compute_s: float = 0.0,
) -> FinalisedReport | None:
    """Fold exactly the planned batches (rescanning lost ones), commit, close the job.

    None when the job is no longer open: another run sharing it committed its report, or a newer
    job replaced it. Then nothing is rescanned and nothing committed. ``compute_s`` is the time
    this run spent on the job's initialise and scans; the report's summary records it with the
    time spent here, as the report's compute time (a run of many scopes spends its wall time on
    all of them).
    """
    finalise_started = time.perf_counter()
    contributions = ledger.contributions(plan)
    if contributions is None:
        return None
    missing = [index for index in range(plan.batch_count) if index not in contributions]
    with connect(source) as connection:
        if plan.scope not in tool.catalogue.watermark(connection, [plan.scope]):
            raise ScopeNotFoundError(
                f"scope {plan.scope!r} was deleted from the source during the {tool.name} job; "
                "its report was not committed"
            )
        # A cache tier's entries go as another run closes the job: missing, or closed?
        if missing and ledger.status(plan) != OPEN:
            return None
        for index in missing:
            contributions[index] = scan_and_record(
                tool, connection, ledger, plan, plan.batch(index)
            )
        total = tool.merge([tool.empty(), *(contributions[i] for i in range(plan.batch_count))])
        rows = validate_report(
            tool, plan.scope, tool.finalise(connection, plan.scope, total, plan.extent.params)
        )
        utilisation = tool.catalogue.utilisation(connection, [plan.scope]).get(plan.scope)
    computed_at = time.time()
    header = ReportHeader(
        tool=tool.name,
        scope=plan.scope,
        generation=plan.generation,
        computed_at=computed_at,
        watermark=plan.extent.watermark,
        entity_count=plan.extent.entity_count,
        row_count=len(rows),
        unused_count=int(rows["unused"].sum()),
        batch_count=plan.batch_count,
        shard_count=shard_count,
        duration_s=round(computed_at - plan.started_at, 4),
        utilisation=utilisation,
        run_id=run_id,
        tenant=plan.extent.tenant,
        summary={
            "params": dict(plan.extent.params),
            "batches_folded": plan.batch_count,
            "batches_rescanned_at_finalise": len(missing),
            "resumed": plan.resumed,
            "source_anomalies": source_anomalies(rows),
            "compute_s": round(compute_s + time.perf_counter() - finalise_started, 4),
        },
    )
    store.commit(header, rows)
    ledger.close_job(plan)
    return FinalisedReport(header, rows, missing)


def source_anomalies(rows: pd.DataFrame, examples: int = 5) -> dict[str, Any]:
    """What the tool found odd in the source (``detail["anomalies"]`` of its rows): the count of
    each kind over the report, and the first few entities with any."""
    counts: dict[str, int] = {}
    listed: list[dict[str, Any]] = []
    for entity_id, detail in zip(rows["entity_id"], rows["detail"], strict=True):
        found = detail.get("anomalies") if isinstance(detail, dict) else None
        if not found:
            continue
        for kind, count in found.items():
            counts[kind] = counts.get(kind, 0) + int(count)
        if len(listed) < examples:
            listed.append({"entity_id": entity_id, **found})
    return {"counts": dict(sorted(counts.items())), "examples": listed}

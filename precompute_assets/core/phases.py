"""The three phases of one job, without Dagster: the ops in ``orchestration/assets.py`` call these.

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
from precompute_assets.core.fold import Fold
from precompute_assets.core.ledger import OPEN, Ledger
from precompute_assets.core.plan import JobPlan, Shard, cut_on_keys
from precompute_assets.core.report_store import ReportHeader, ReportStore
from precompute_assets.core.rows import validate_report
from precompute_assets.core.scanning import scan_batches
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
    lifted: bool = False  # its batches are folded into one partial in the ledger


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
    """Initialise: bound the job in the source, cut its batches on the actual keys when the
    catalogue gives them, then open or resume the job in the ledger.

    A new job's params gain its reference times (``window.reference_params``).
    """
    now = time.time() if now is None else now
    with connect(source) as connection:
        extent = tool.catalogue.initialise(connection, scope)
        starts = cut_on_keys(tool.catalogue, connection, scope, extent, batch_size)
    reference = reference_params(tool, now)
    return ledger.open_job(tool.name, scope, extent, batch_size, reference, starts)


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
    tool: ReportTool[Any],
    plan: JobPlan,
    shard: Shard,
    source: Engine,
    ledger: Ledger,
    threads: int = 1,
) -> ShardResult:
    """Scan the shard's batches, skipping those already in the ledger, and lift them: their fold
    becomes one partial in the ledger, in place of their entries.

    Each batch is checkpointed as it is scanned, so a shard killed midway resumes at its batch in
    flight; the batches an earlier attempt recorded are read back for the fold. A shard already
    lifted scans and lifts nothing; one overlapping a partial of another cut (a resume with
    another number of shards) records its batches and leaves them unlifted. A shard whose job
    another run has closed (or a newer job replaced) scans nothing. The batches are scanned on
    up to ``threads`` source connections at once (``scanning.scan_batches``).
    """
    started = time.perf_counter()
    span = shard.batch_indices
    fold = Fold(tool, span)
    liftable = True
    with ledger.contributions(plan, span) as held:
        if held is None:
            return ShardResult(shard.index, 0, 0, _since(started), ledger.status(plan))
        for batches, contribution, partial in held:
            if batches.start < span.start or batches.stop > span.stop:
                liftable = False  # a partial of another cut: folded at finalise, not here
                fold.cover(range(max(batches.start, span.start), min(batches.stop, span.stop)))
            else:
                fold.add(batches, contribution, partial=partial)
    if fold.partials == [span]:
        return ShardResult(shard.index, 0, len(span), _since(started), lifted=True)
    todo = fold.missing()

    def scan(connection: Connection, index: int) -> Any:
        return scan_and_record(tool, connection, ledger, plan, plan.batch(index))

    for index, contribution in scan_batches(source, todo, threads, scan):
        fold.add(range(index, index + 1), contribution)
    lifted = liftable and bool(span) and ledger.lift(plan, span, fold.total(), fold.partials)
    return ShardResult(
        shard.index, len(todo), len(span) - len(todo), _since(started), lifted=lifted
    )


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

    The fold streams from the ledger: a partial per lifted shard, then the entries of the batches
    no partial covers (what a crash left unlifted), a few at a time, so its memory does not grow
    with the number of batches. None when the job is no longer open: another run sharing it
    committed its report, or a newer job replaced it. Then nothing is rescanned and nothing
    committed. ``compute_s`` is the time this run spent on the job's initialise and scans; the
    report's summary records it with the time spent here, as the report's compute time (a run
    of many scopes spends its wall time on all of them).
    """
    finalise_started = time.perf_counter()
    fold = Fold(tool, range(plan.batch_count))
    with ledger.contributions(plan, fold.span) as held:
        if held is None:
            return None
        for batches, contribution, partial in held:
            fold.add(batches, contribution, partial=partial)
    folded_from_ledger = fold.entries
    missing = fold.missing()
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
            fold.add(
                range(index, index + 1),
                scan_and_record(tool, connection, ledger, plan, plan.batch(index)),
            )
        total = fold.total()
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
            "partials_folded": len(fold.partials),
            "batches_folded_unlifted": folded_from_ledger,
            "batches_rescanned_at_finalise": len(missing),
            "resumed": plan.resumed,
            "source_anomalies": source_anomalies(rows),
            "compute_s": round(compute_s + time.perf_counter() - finalise_started, 4),
        },
    )
    store.commit(header, rows)
    ledger.close_job(plan)
    return FinalisedReport(header, rows, missing)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)


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

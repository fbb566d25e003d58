"""The batch ledger: each batch's contribution, upserted by (tool, scope, generation, batch).

Upserting by key makes a retried or duplicated batch overwrite itself, so the report is a fold
over distinct batches whatever ran twice or in which order. A job that crashed is resumed by the
next run with the same plan, and the batches already in the ledger are not scanned again.

Contributions live in the SQL table below, or, with a cache tier (``cache.py``), in Redis or
memcached; the jobs always live in SQL. Opening a job locks its scope's row in
``precompute_scope_locks``, so concurrent runs of one scope share one job on PostgreSQL as on
SQLite (whose writers are serialised anyway).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from precompute_assets.contract import Extent
from precompute_assets.core.cache import ContributionCache, contribution_key
from precompute_assets.core.db import dialect_insert, snapshot_transaction, write_transaction
from precompute_assets.core.plan import JobPlan, plan_fingerprint
from precompute_assets.core.schema import batches, create_store_schema, jobs, scope_locks

OPEN = "open"
DAY_S = 86_400
# Days a closed, replaced or abandoned job stays in the ledger (PRECOMPUTE_JOB_RETENTION_DAYS).
JOB_RETENTION_DAYS = 7.0


def encode(contribution: Any) -> str:
    return json.dumps(contribution, separators=(",", ":"), sort_keys=True)


def decode(text: str) -> Any:
    return json.loads(text)


class Ledger:
    """Jobs in SQL (SQLite or PostgreSQL); contributions in SQL or in a cache tier."""

    def __init__(
        self,
        engine: Engine,
        cache: ContributionCache | None = None,
        retention_days: float = JOB_RETENTION_DAYS,
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.retention_s = retention_days * DAY_S
        create_store_schema(engine)

    def open_job(
        self,
        tool: str,
        scope: str,
        extent: Extent,
        batch_size: int,
        reference: Mapping[str, Any] | None = None,
    ) -> JobPlan:
        """Resume the open job with the same plan, or start a new generation and drop older ones.

        ``reference`` (the job's reference times) joins the extent's params of a new job; a
        resumed job keeps the ones it was opened with.
        """
        fingerprint = plan_fingerprint(extent, batch_size)
        key = (jobs.c.tool == tool) & (jobs.c.scope == scope)
        with write_transaction(self.engine) as connection:
            _lock_scope(connection, tool, scope)
            latest = connection.execute(
                sa.select(jobs).where(key).order_by(jobs.c.generation.desc()).limit(1)
            ).first()
            if latest is not None and latest.status == OPEN and latest.fingerprint == fingerprint:
                return JobPlan(
                    tool,
                    scope,
                    latest.generation,
                    Extent(**json.loads(latest.extent)),
                    batch_size,
                    resumed=True,
                    started_at=time.time(),
                    job_id=latest.job_id,
                )
            extent = replace(extent, params={**extent.params, **(reference or {})})
            generation = 1 if latest is None else latest.generation + 1
            job_id = uuid.uuid4().hex
            connection.execute(
                jobs.update().where(key & (jobs.c.status == OPEN)).values(status="superseded")
            )
            connection.execute(
                batches.delete().where((batches.c.tool == tool) & (batches.c.scope == scope))
            )
            connection.execute(
                jobs.insert().values(
                    tool=tool,
                    scope=scope,
                    generation=generation,
                    job_id=job_id,
                    fingerprint=fingerprint,
                    status=OPEN,
                    extent=json.dumps(_extent_json(extent)),
                    batch_size=batch_size,
                    opened_at=time.time(),
                )
            )
        return JobPlan(
            tool,
            scope,
            generation,
            extent,
            batch_size,
            resumed=False,
            started_at=time.time(),
            job_id=job_id,
        )

    def status(self, plan: JobPlan) -> str:
        """``open``, ``closed`` (its report is committed) or ``superseded`` (a newer job opened)."""
        with self.engine.connect() as connection:
            return _status(connection, plan)

    def recorded(self, plan: JobPlan, indices: Iterable[int]) -> set[int]:
        """Which of ``indices`` this job has a contribution for."""
        wanted = list(indices)
        if not wanted:
            return set()
        if self.cache is not None:
            keys = {_cache_key(plan, index): index for index in wanted}
            return {keys[key] for key in self.cache.get_many(keys)}
        query = sa.select(batches.c.batch).where(
            _job_key(plan) & batches.c.batch.between(min(wanted), max(wanted))
        )
        with self.engine.connect() as connection:
            return {row.batch for row in connection.execute(query)} & set(wanted)

    def record(self, plan: JobPlan, index: int, contribution: Any) -> None:
        """Upsert one batch's contribution under its key."""
        encoded = encode(contribution)
        if self.cache is not None:
            self.cache.set(_cache_key(plan, index), encoded)
            return
        values = {
            "tool": plan.tool,
            "scope": plan.scope,
            "generation": plan.generation,
            "batch": index,
            "contribution": encoded,
            "scanned_at": time.time(),
        }
        with write_transaction(self.engine) as connection:
            insert = dialect_insert(connection)(batches).values(**values)
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=["tool", "scope", "generation", "batch"],
                    set_={"contribution": insert.excluded.contribution, "scanned_at": time.time()},
                )
            )

    def contributions(self, plan: JobPlan) -> dict[int, Any] | None:
        """Every contribution of this job's planned batches the ledger holds, by batch; None
        once the job is no longer open (another run closed it, or a newer job replaced it).

        The job's status and its SQL contributions are read from one snapshot, so a job that
        another run closes meanwhile is seen either open with all its batches or closed.
        """
        with snapshot_transaction(self.engine) as connection:
            if _status(connection, plan) != OPEN:
                return None
            if self.cache is None:
                query = sa.select(batches.c.batch, batches.c.contribution).where(_job_key(plan))
                return {
                    row.batch: decode(row.contribution)
                    for row in connection.execute(query)
                    if row.batch < plan.batch_count
                }
        keys = {_cache_key(plan, index): index for index in range(plan.batch_count)}
        return {keys[key]: decode(value) for key, value in self.cache.get_many(keys).items()}

    def close_job(self, plan: JobPlan) -> None:
        """Mark the job closed and expire its entries: only the report persists."""
        with write_transaction(self.engine) as connection:
            connection.execute(
                jobs.update()
                .where(
                    (jobs.c.tool == plan.tool)
                    & (jobs.c.scope == plan.scope)
                    & (jobs.c.generation == plan.generation)
                )
                .values(status="closed", closed_at=time.time())
            )
            connection.execute(batches.delete().where(_job_key(plan)))
            self._forget_old_jobs(connection, time.time() - self.retention_s)
        if self.cache is not None:
            self.cache.delete_many(_cache_key(plan, index) for index in range(plan.batch_count))

    def _forget_old_jobs(self, connection: Connection, before: float) -> None:
        """Delete the jobs (of every scope) that ended, or were left open, before ``before``,
        with whatever batches they still have: the ledger keeps recent jobs only."""
        ended = sa.func.coalesce(jobs.c.closed_at, jobs.c.opened_at) < before
        old = sa.select(jobs.c.tool, jobs.c.scope, jobs.c.generation).where(ended)
        connection.execute(
            batches.delete().where(
                sa.tuple_(batches.c.tool, batches.c.scope, batches.c.generation).in_(old)
            )
        )
        connection.execute(jobs.delete().where(ended))

    def evictions(self) -> int | None:
        """The cache tier's eviction count, or None without one."""
        return None if self.cache is None else self.cache.evictions()


def _lock_scope(connection: Connection, tool: str, scope: str) -> None:
    """Hold the scope's lock row until the transaction ends (creating it the first time)."""
    connection.execute(
        dialect_insert(connection)(scope_locks)
        .values(tool=tool, scope=scope)
        .on_conflict_do_nothing()
    )
    connection.execute(
        sa.select(scope_locks.c.tool)
        .where((scope_locks.c.tool == tool) & (scope_locks.c.scope == scope))
        .with_for_update()
    )


def _status(connection: Connection, plan: JobPlan) -> str:
    status = connection.execute(
        sa.select(jobs.c.status).where(
            (jobs.c.tool == plan.tool)
            & (jobs.c.scope == plan.scope)
            & (jobs.c.generation == plan.generation)
        )
    ).scalar()
    return status or "superseded"


def _cache_key(plan: JobPlan, index: int) -> str:
    return contribution_key(plan.tool, plan.scope, plan.job_id, index)


def _job_key(plan: JobPlan) -> sa.ColumnElement[bool]:
    return (
        (batches.c.tool == plan.tool)
        & (batches.c.scope == plan.scope)
        & (batches.c.generation == plan.generation)
    )


def _extent_json(extent: Extent) -> Mapping[str, Any]:
    return {
        "first_key": extent.first_key,
        "last_key": extent.last_key,
        "entity_count": extent.entity_count,
        "watermark": extent.watermark,
        "params": dict(extent.params),
        "tenant": extent.tenant,
    }

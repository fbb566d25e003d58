"""The batch ledger: each batch's contribution, upserted by (tool, scope, generation, batch), and
each shard's partial, the fold of its batches.

Upserting by key makes a retried or duplicated batch overwrite itself, so the report is a fold
over distinct batches whatever ran twice or in which order. A job that crashed is resumed by the
next run with the same plan, and the batches already in the ledger are not scanned again.

**Lifting.** A shard holding every one of its batches folds them into one *partial* and lifts
it: the partial replaces the batches' entries, so finalise merges a partial per shard plus
whatever batches a crash left unlifted, streamed, never the whole ledger at once. Batch keys stay
the unit of idempotence and resume: a batch in a partial counts as recorded, and an entry
written for it later (by a run sharing the job) is ignored. A job's partials never overlap (each
lift checks, holding the job's row), so every batch is folded once, from its partial or from its
own entry, whatever a crash interrupted:

- On the SQL ledger, recording a partial and deleting its batches' rows is one transaction: a
  crash leaves the batches or the partial, never both and never neither.
- With a cache tier, partials are recorded in SQL all the same (a shard's worth of scanning is
  too much to leave to eviction, and a job has a partial per shard at most), and the batches'
  entries are deleted from the tier after that transaction. A crash in between leaves both: the
  partial wins and the entries are ignored. No partial is ever evicted; one lost all the same
  (its row deleted) leaves its batches missing, and finalise rescans them.

Contributions live in the SQL table below, or, with a cache tier (``cache.py``), in Redis or
memcached; the jobs and partials always live in SQL. Opening a job locks its scope's row in
``precompute_scope_locks``, so concurrent runs of one scope share one job on PostgreSQL as on
SQLite (whose writers are serialised anyway).
"""

from __future__ import annotations

import json
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from itertools import islice
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from precompute_assets.contract import Extent
from precompute_assets.core.cache import ContributionCache, contribution_key
from precompute_assets.core.db import dialect_insert, snapshot_transaction, write_transaction
from precompute_assets.core.plan import JobPlan, plan_fingerprint
from precompute_assets.core.schema import (
    batches,
    create_store_schema,
    jobs,
    partials,
    scope_locks,
)

OPEN = "open"
DAY_S = 86_400
# Days a closed, replaced or abandoned job stays in the ledger (PRECOMPUTE_JOB_RETENTION_DAYS).
JOB_RETENTION_DAYS = 7.0
# Rows fetched at a time when the ledger streams contributions, and cache keys asked at a time.
STREAM_ROWS = 64
CACHE_KEYS = 500


def encode(contribution: Any) -> str:
    return json.dumps(contribution, separators=(",", ":"), sort_keys=True)


def decode(text: str | bytes) -> Any:
    return json.loads(text)


class Held(NamedTuple):
    """A contribution the ledger holds: one batch's entry, or a partial over ``batches``."""

    batches: range
    contribution: Any
    partial: bool


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
        batch_starts: Sequence[int] | None = None,
    ) -> JobPlan:
        """Resume the open job with the same plan, or start a new generation and drop older ones.

        ``reference`` (the job's reference times) joins the extent's params of a new job; a
        resumed job keeps the ones it was opened with. ``batch_starts`` is the cut on the actual
        keys (``plan.cut_on_keys``), None for an even cut.
        """
        starts = None if batch_starts is None else tuple(batch_starts)
        fingerprint = plan_fingerprint(extent, batch_size, starts)
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
                    batch_starts=json.loads(latest.batch_starts or "null"),
                )
            extent = replace(extent, params={**extent.params, **(reference or {})})
            generation = 1 if latest is None else latest.generation + 1
            job_id = uuid.uuid4().hex
            connection.execute(
                jobs.update().where(key & (jobs.c.status == OPEN)).values(status="superseded")
            )
            for table in (batches, partials):
                connection.execute(
                    table.delete().where((table.c.tool == tool) & (table.c.scope == scope))
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
                    batch_starts=None if starts is None else json.dumps(starts),
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
            batch_starts=starts,
        )

    def status(self, plan: JobPlan) -> str:
        """``open``, ``closed`` (its report is committed) or ``superseded`` (a newer job opened)."""
        with self.engine.connect() as connection:
            return _status(connection, plan)

    def recorded(self, plan: JobPlan, indices: Iterable[int]) -> set[int]:
        """Which of ``indices`` this job holds, in a partial or as a batch entry."""
        wanted = set(indices)
        if not wanted:
            return set()
        span = range(min(wanted), max(wanted) + 1)
        with snapshot_transaction(self.engine) as connection:
            held = {index for lifted in _lifted(connection, plan, span) for index in lifted}
            if self.cache is None:
                query = sa.select(batches.c.batch).where(
                    _job_key(plan) & batches.c.batch.between(span.start, span.stop - 1)
                )
                held.update(connection.execute(query).scalars())
        if self.cache is not None:
            keys = {_cache_key(plan, index): index for index in wanted - held}
            held.update(keys[key] for key in self.cache.get_many(keys))
        return held & wanted

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
            if connection.dialect.name == "postgresql":
                # A checkpoint need not wait for the disk: the entries a server crash loses are
                # missing, and missing batches are rescanned. Its transaction stays atomic, and
                # the lift after it (a normal commit) flushes it. Half a batch's write time.
                connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
            insert = dialect_insert(connection)(batches).values(**values)
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=["tool", "scope", "generation", "batch"],
                    set_={"contribution": insert.excluded.contribution, "scanned_at": time.time()},
                )
            )

    @contextmanager
    def contributions(self, plan: JobPlan, span: range) -> Iterator[Iterator[Held] | None]:
        """What the job holds of the batches in ``span``, streamed: every partial overlapping
        them, then the entry of each batch no partial covers. Each batch comes at most once.
        None once the job is no longer open (another run closed it, or a newer job replaced it).

        The job's status, its partials and its SQL entries are read from one snapshot, so a job
        that another run closes or lifts meanwhile is seen as it was before or after, whole. At
        most a few rows are decoded at a time (cache entries, a few hundred keys at a time).
        Consume the stream inside the ``with``.
        """
        with snapshot_transaction(self.engine) as connection:
            if _status(connection, plan) != OPEN:
                yield None
                return
            yield self._stream(connection, plan, span)

    def _stream(self, connection: Connection, plan: JobPlan, span: range) -> Iterator[Held]:
        if not span:
            return
        lifted: list[range] = []
        query = (
            sa.select(partials.c.first_batch, partials.c.last_batch, partials.c.contribution)
            .where(_overlapping(plan, span))
            .order_by(partials.c.first_batch)
        )
        for row in connection.execute(query.execution_options(yield_per=1)):
            lifted.append(range(row.first_batch, row.last_batch + 1))
            yield Held(lifted[-1], decode(row.contribution), partial=True)
        covered = _covered_by(lifted)
        if self.cache is None:
            query = (
                sa.select(batches.c.batch, batches.c.contribution)
                .where(_job_key(plan) & batches.c.batch.between(span.start, span.stop - 1))
                .order_by(batches.c.batch)
            )
            for row in connection.execute(query.execution_options(yield_per=STREAM_ROWS)):
                if not covered(row.batch):
                    yield Held(range(row.batch, row.batch + 1), decode(row.contribution), False)
            return
        uncovered = (index for index in span if not covered(index))
        while chunk := list(islice(uncovered, CACHE_KEYS)):
            keys = {_cache_key(plan, index): index for index in chunk}
            for key, value in self.cache.get_many(keys).items():
                yield Held(range(keys[key], keys[key] + 1), decode(value), partial=False)

    def lift(
        self, plan: JobPlan, span: range, partial: Any, replacing: Sequence[range] = ()
    ) -> bool:
        """Record ``partial``, the fold of every batch in ``span``, in place of what the job held
        of them: their entries, and the partials ``replacing`` (inside ``span``, folded into it).

        False, and nothing changed, when the job is no longer open or its partials over ``span``
        are no longer exactly ``replacing`` (another run lifted an overlapping span meanwhile):
        the batches then stay as they are, each folded once. See the module's docstring for how
        a crash between the partial and the entries' removal is safe on either tier.
        """
        encoded = encode(partial)
        with write_transaction(self.engine) as connection:
            # The job's row, held to the end: lifts of one job and its closing take turns.
            status = connection.execute(
                sa.select(jobs.c.status).where(_job_row(plan)).with_for_update()
            ).scalar()
            if status != OPEN:
                return False
            if _lifted(connection, plan, span) != sorted(replacing, key=lambda r: r.start):
                return False
            connection.execute(partials.delete().where(_overlapping(plan, span)))
            connection.execute(
                partials.insert().values(
                    tool=plan.tool,
                    scope=plan.scope,
                    generation=plan.generation,
                    first_batch=span.start,
                    last_batch=span.stop - 1,
                    contribution=encoded,
                    lifted_at=time.time(),
                )
            )
            if self.cache is None:
                connection.execute(
                    batches.delete().where(
                        _job_key(plan) & batches.c.batch.between(span.start, span.stop - 1)
                    )
                )
        if self.cache is not None:
            self.cache.delete_many(_cache_key(plan, index) for index in span)
        return True

    def close_job(self, plan: JobPlan) -> None:
        """Mark the job closed and expire its entries: only the report persists."""
        with write_transaction(self.engine) as connection:
            connection.execute(
                jobs.update().where(_job_row(plan)).values(status="closed", closed_at=time.time())
            )
            connection.execute(batches.delete().where(_job_key(plan)))
            connection.execute(partials.delete().where(_partial_key(plan)))
            self._forget_old_jobs(connection, time.time() - self.retention_s)
        if self.cache is not None:
            self.cache.delete_many(_cache_key(plan, index) for index in range(plan.batch_count))

    def _forget_old_jobs(self, connection: Connection, before: float) -> None:
        """Delete the jobs (of every scope) that ended, or were left open, before ``before``,
        with whatever batches they still have: the ledger keeps recent jobs only."""
        ended = sa.func.coalesce(jobs.c.closed_at, jobs.c.opened_at) < before
        old = sa.select(jobs.c.tool, jobs.c.scope, jobs.c.generation).where(ended)
        for table in (batches, partials):
            connection.execute(
                table.delete().where(
                    sa.tuple_(table.c.tool, table.c.scope, table.c.generation).in_(old)
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
    status = connection.execute(sa.select(jobs.c.status).where(_job_row(plan))).scalar()
    return status or "superseded"


def _lifted(connection: Connection, plan: JobPlan, span: range) -> list[range]:
    """The spans of the job's partials that overlap ``span``, in order."""
    if not span:
        return []
    query = (
        sa.select(partials.c.first_batch, partials.c.last_batch)
        .where(_overlapping(plan, span))
        .order_by(partials.c.first_batch)
    )
    return [range(first, last + 1) for first, last in connection.execute(query)]


def _covered_by(lifted: list[range]) -> Callable[[int], bool]:
    """Whether a batch is in one of ``lifted``: disjoint spans, in order."""
    starts = [span.start for span in lifted]

    def covered(index: int) -> bool:
        at = bisect_right(starts, index) - 1
        return at >= 0 and index in lifted[at]

    return covered


def _cache_key(plan: JobPlan, index: int) -> str:
    return contribution_key(plan.tool, plan.scope, plan.job_id, index)


def _job_row(plan: JobPlan) -> sa.ColumnElement[bool]:
    return (
        (jobs.c.tool == plan.tool)
        & (jobs.c.scope == plan.scope)
        & (jobs.c.generation == plan.generation)
    )


def _job_key(plan: JobPlan) -> sa.ColumnElement[bool]:
    return (
        (batches.c.tool == plan.tool)
        & (batches.c.scope == plan.scope)
        & (batches.c.generation == plan.generation)
    )


def _partial_key(plan: JobPlan) -> sa.ColumnElement[bool]:
    return (
        (partials.c.tool == plan.tool)
        & (partials.c.scope == plan.scope)
        & (partials.c.generation == plan.generation)
    )


def _overlapping(plan: JobPlan, span: range) -> sa.ColumnElement[bool]:
    return (
        _partial_key(plan)
        & (partials.c.first_batch <= span.stop - 1)
        & (partials.c.last_batch >= span.start)
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

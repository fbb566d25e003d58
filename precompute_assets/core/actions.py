"""The remediation log in the store: plans, the actions they became, and each action's batches.

An admin's review makes a **plan**: an action of kind ``apply`` in status ``planned``, naming the
entities and the report generation (and watermark) they came from, cut into batches. Submitting
it queues it, once (``planned`` to ``queued`` is one conditional update, so a form posted twice
launches one run); its run takes it to ``running``, then ``done``, ``refused`` or ``failed``. An
applied action may be undone once: its ``undo`` action mirrors its batches.

Every batch is checkpointed twice, as the report ledger checkpoints scans: **prepared** (which
entities were applied and skipped, and what undo needs) while the source's transaction is still
open, then **done** once it committed. A run that finds a batch done skips it; one that finds it
prepared only (the run died around the source's commit) applies the same entities again, which
changes nothing more, and keeps the undo data of the first time. The rows are the audit log:
who (the key's id), when, tool, scope, report generation, entities applied and skipped, result.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from precompute_assets.core.db import connect, write_transaction
from precompute_assets.core.schema import (
    action_batches,
    actions,
    check_store_schema,
    create_store_schema,
)

APPLY, UNDO = "apply", "undo"
PLANNED, QUEUED, RUNNING, DONE, REFUSED, FAILED = (
    "planned",
    "queued",
    "running",
    "done",
    "refused",
    "failed",
)
# Plans reviewed and never applied are forgotten after this long.
PLAN_RETENTION_S = 86_400


@dataclass(frozen=True)
class Action:
    """One plan, apply or undo, as the audit log keeps it."""

    action_id: str
    tool: str
    scope: str
    tenant: str | None
    kind: str
    undoes: str | None
    generation: int
    watermark: str
    entities: list[dict[str, str]]  # [{"id": ..., "name": ...}], as reviewed
    params: dict[str, Any]
    key_id: str
    status: str
    message: str | None
    run_id: str | None
    refresh_run_id: str | None
    applied_count: int | None
    skipped_count: int | None
    created_at: float
    submitted_at: float | None
    finished_at: float | None

    @property
    def names(self) -> dict[str, str]:
        return {entity["id"]: entity["name"] for entity in self.entities}


@dataclass(frozen=True)
class BatchRecord:
    """One batch of an action: its entities, and once prepared, what became of them."""

    action_id: str
    batch: int
    entities: list[str]
    applied: list[str] | None
    skipped: list[str] | None
    undo: Any
    prepared_at: float | None
    done_at: float | None

    @property
    def prepared(self) -> bool:
        return self.prepared_at is not None

    @property
    def done(self) -> bool:
        return self.done_at is not None


class ActionLog:
    """Plans, actions and batches in the store's ``precompute_actions`` tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def plan(
        self,
        *,
        tool: str,
        scope: str,
        tenant: str | None,
        generation: int,
        watermark: str,
        entities: Sequence[Mapping[str, str]],
        params: Mapping[str, Any],
        key_id: str,
        batch_size: int,
    ) -> Action:
        """A new plan to apply the tool's remediation to ``entities``, cut into batches."""
        create_store_schema(self.engine)
        action_id = uuid.uuid4().hex
        now = time.time()
        ids = [entity["id"] for entity in entities]
        with write_transaction(self.engine) as connection:
            # Plans nobody applied go after a day (their batches with them).
            old = sa.select(actions.c.action_id).where(
                (actions.c.status == PLANNED) & (actions.c.created_at < now - PLAN_RETENTION_S)
            )
            connection.execute(action_batches.delete().where(action_batches.c.action_id.in_(old)))
            connection.execute(
                actions.delete().where(
                    (actions.c.status == PLANNED) & (actions.c.created_at < now - PLAN_RETENTION_S)
                )
            )
            connection.execute(
                actions.insert().values(
                    action_id=action_id,
                    tool=tool,
                    scope=scope,
                    tenant=tenant,
                    kind=APPLY,
                    generation=generation,
                    watermark=watermark,
                    entities=json.dumps([dict(entity) for entity in entities]),
                    params=json.dumps(dict(params), sort_keys=True),
                    key_id=key_id,
                    status=PLANNED,
                    created_at=now,
                )
            )
            cut = range(0, len(ids), batch_size)
            _insert_batches(
                connection, action_id, {n: ids[at : at + batch_size] for n, at in enumerate(cut)}
            )
        found = self.get(action_id)
        assert found is not None
        return found

    def plan_undo(self, applied: Action, key_id: str) -> tuple[Action, bool]:
        """The plan to undo a done apply, and whether this call made it: an apply is undone
        once, so asking again returns the undo that exists (``submit`` it as any plan)."""
        create_store_schema(self.engine)
        try:
            return self._plan_undo(applied, key_id)
        except sa.exc.IntegrityError:  # another request made it meanwhile (``undoes`` is unique)
            existing = self.undo_of(applied.action_id)
            assert existing is not None
            return existing, False

    def _plan_undo(self, applied: Action, key_id: str) -> tuple[Action, bool]:
        action_id = uuid.uuid4().hex
        now = time.time()
        with write_transaction(self.engine) as connection:
            existing = connection.execute(
                sa.select(actions.c.action_id).where(actions.c.undoes == applied.action_id)
            ).scalar()
            if existing is None:
                done = [
                    batch
                    for batch in _batches(connection, applied.action_id)
                    if batch.done and batch.applied
                ]
                restored = {entity for batch in done for entity in batch.applied or ()}
                connection.execute(
                    actions.insert().values(
                        action_id=action_id,
                        tool=applied.tool,
                        scope=applied.scope,
                        tenant=applied.tenant,
                        kind=UNDO,
                        undoes=applied.action_id,
                        generation=applied.generation,
                        watermark=applied.watermark,
                        entities=json.dumps([e for e in applied.entities if e["id"] in restored]),
                        params=json.dumps(applied.params, sort_keys=True),
                        key_id=key_id,
                        status=PLANNED,
                        created_at=now,
                    )
                )
                # Batch for batch: undo batch N restores what apply batch N changed.
                _insert_batches(
                    connection, action_id, {batch.batch: batch.applied or [] for batch in done}
                )
        made = existing is None
        found = self.get(action_id if made else existing)
        assert found is not None
        return found, made

    def get(self, action_id: str) -> Action | None:
        return self._first(actions.c.action_id == action_id)

    def undo_of(self, action_id: str) -> Action | None:
        return self._first(actions.c.undoes == action_id)

    def _first(self, condition: sa.ColumnElement[bool]) -> Action | None:
        """The action matching ``condition``; None if none does or the store has no tables."""
        with connect(self.engine) as connection:
            if not check_store_schema(connection):
                return None
            row = connection.execute(sa.select(actions).where(condition)).first()
        return None if row is None else _action(row._asdict())

    def recent(
        self,
        tenant: str | None,
        *,
        tool: str | None = None,
        scope: str | None = None,
        limit: int = 50,
    ) -> list[Action]:
        """The newest actions submitted (plans never applied left out), of ``tenant`` (None:
        every tenant's), of one tool and scope if given."""
        query = sa.select(actions).where(actions.c.status != PLANNED)
        if tenant is not None:
            query = query.where(actions.c.tenant == tenant)
        if tool is not None:
            query = query.where(actions.c.tool == tool)
        if scope is not None:
            query = query.where(actions.c.scope == scope)
        query = query.order_by(actions.c.created_at.desc()).limit(limit)
        with connect(self.engine) as connection:
            if not check_store_schema(connection):
                return []
            return [_action(row._asdict()) for row in connection.execute(query)]

    def batches(self, action_id: str) -> list[BatchRecord]:
        with connect(self.engine) as connection:
            return _batches(connection, action_id)

    def submit(self, action_id: str) -> bool:
        """Queue a plan; False if it is not a plan any more (submitted already)."""
        return self._move(action_id, (PLANNED,), QUEUED, submitted_at=time.time())

    def withdraw(self, action_id: str, message: str) -> None:
        """Back to a plan: its run could not be launched (``message`` says why)."""
        self._move(action_id, (QUEUED,), PLANNED, submitted_at=None, message=message)

    def launched(self, action_id: str, run_id: str) -> None:
        self._update(action_id, run_id=run_id)

    def start(self, action_id: str) -> None:
        """Running (again, after a crash or a failure)."""
        self._move(action_id, (QUEUED, RUNNING, FAILED), RUNNING, message=None)

    def refuse(self, action_id: str, message: str) -> None:
        self._move(action_id, (QUEUED, RUNNING), REFUSED, message=message, finished_at=time.time())

    def fail(self, action_id: str, message: str) -> None:
        self._move(action_id, (QUEUED, RUNNING), FAILED, message=message)

    def finish(self, action_id: str, applied: int, skipped: int, message: str) -> None:
        self._move(
            action_id,
            (QUEUED, RUNNING, FAILED),
            DONE,
            applied_count=applied,
            skipped_count=skipped,
            message=message,
            finished_at=time.time(),
        )

    def refresh_requested(self, action_id: str, run_id: str | None, note: str | None) -> None:
        """The report refresh that followed the action: its run, or why none was asked for."""
        values: dict[str, Any] = {"refresh_run_id": run_id}
        if note:
            found = self.get(action_id)
            values["message"] = f"{found.message}; {note}" if found and found.message else note
        self._update(action_id, **values)

    def prepare(
        self, action_id: str, batch: int, applied: list[str], skipped: list[str], undo: Any
    ) -> BatchRecord:
        """Record what a batch is applying, unless a run recorded it first; the batch as stored.

        Called while the source's transaction is open: a batch is never done in the source
        without this record of what undo needs.
        """
        with write_transaction(self.engine) as connection:
            connection.execute(
                action_batches.update()
                .where(
                    (action_batches.c.action_id == action_id)
                    & (action_batches.c.batch == batch)
                    & action_batches.c.prepared_at.is_(None)
                )
                .values(
                    applied=json.dumps(applied),
                    skipped=json.dumps(skipped),
                    undo=json.dumps(undo, allow_nan=False),
                    prepared_at=time.time(),
                )
            )
            return next(b for b in _batches(connection, action_id) if b.batch == batch)

    def mark_done(self, action_id: str, batch: int) -> None:
        with write_transaction(self.engine) as connection:
            connection.execute(
                action_batches.update()
                .where(
                    (action_batches.c.action_id == action_id)
                    & (action_batches.c.batch == batch)
                    & action_batches.c.done_at.is_(None)
                )
                .values(done_at=time.time())
            )

    def _move(self, action_id: str, sources: tuple[str, ...], to: str, **values: Any) -> bool:
        create_store_schema(self.engine)
        with write_transaction(self.engine) as connection:
            moved = connection.execute(
                actions.update()
                .where((actions.c.action_id == action_id) & actions.c.status.in_(sources))
                .values(status=to, **values)
            ).rowcount
        return moved == 1

    def _update(self, action_id: str, **values: Any) -> None:
        with write_transaction(self.engine) as connection:
            connection.execute(
                actions.update().where(actions.c.action_id == action_id).values(**values)
            )


def _insert_batches(
    connection: sa.Connection, action_id: str, batches: Mapping[int, list[str]]
) -> None:
    if batches:
        connection.execute(
            action_batches.insert(),
            [
                {"action_id": action_id, "batch": index, "entities": json.dumps(entities)}
                for index, entities in batches.items()
            ],
        )


def _batches(connection: sa.Connection, action_id: str) -> list[BatchRecord]:
    rows = connection.execute(
        sa.select(action_batches)
        .where(action_batches.c.action_id == action_id)
        .order_by(action_batches.c.batch)
    )
    return [
        BatchRecord(
            row.action_id,
            row.batch,
            json.loads(row.entities),
            None if row.applied is None else json.loads(row.applied),
            None if row.skipped is None else json.loads(row.skipped),
            None if row.undo is None else json.loads(row.undo),
            row.prepared_at,
            row.done_at,
        )
        for row in rows
    ]


def _action(values: dict[str, Any]) -> Action:
    return Action(
        **{
            **values,
            "entities": json.loads(values["entities"]),
            "params": json.loads(values["params"]),
        }
    )

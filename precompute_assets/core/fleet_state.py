"""What the sensors know of every scope, kept in the store: the fleet's refresh state.

A tick never reads the whole fleet. It reads the catalogue's changes since the tool's cursor into
one row per (tool, scope) (``sync``: the scope's tenant, utilisation and source watermark, or
that it is gone), then asks these rows, joined with the stored report headers, one query per
question: which scopes are new or gone (discovery), which are due and in what order (refresh),
which are past the long maximum age (the baseline), whose freshness differs from the one last
recorded (freshness). The questions are the refresh policy's (``refresh.py``) written in SQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from precompute_assets.contract import ReportTool, ScopeChange
from precompute_assets.core.db import connect, dialect_insert, write_transaction
from precompute_assets.core.refresh import ScopeState
from precompute_assets.core.report_store import ReportHeader, header_from_row
from precompute_assets.core.schema import (
    catalogue_cursors,
    create_store_schema,
    headers,
    scope_states,
)
from precompute_assets.core.settings import RefreshSettings
from precompute_assets.core.window import window_start

# Changes read from the catalogue per tick: a burst of more is read over the next ticks.
CHANGES_PER_SYNC = 10_000
SCOPES_PER_STATEMENT = 500

_STATE_KEY = ("tool", "scope")


@dataclass(frozen=True)
class Synced:
    """What one ``sync`` read: how many scopes changed, and whether it listed them all."""

    changed: int
    complete: bool


@dataclass(frozen=True)
class Counts:
    """How many scopes a tool has (registered, in the source) and how many are due."""

    scopes: int
    due: int


class FleetState:
    """The per-scope refresh state of every tool, in the report store.

    Example::

        fleet = FleetState(store_engine)
        fleet.sync(tool, source_engine)
        due = fleet.due(tool, RefreshSettings.from_env(), time.time(), limit=20)
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_store_schema(engine)

    def sync(self, tool: ReportTool[Any], source: Engine, limit: int = CHANGES_PER_SYNC) -> Synced:
        """Read the catalogue's changes since the tool's cursor into the scopes' rows.

        One transaction holds the cursor's row while it reads and writes, so two sensors
        syncing at once take turns and never move the cursor back.
        """
        now = time.time()
        with write_transaction(self.engine) as store:
            cursor = _locked_cursor(store, tool.name)
            with connect(source) as connection:
                changes = tool.catalogue.changes(connection, cursor, limit)
                latest = {change.scope: change for change in changes.scopes}
                live = [scope for scope, change in latest.items() if not change.deleted]
                utilisation = tool.catalogue.utilisation(connection, live) if live else {}
            if latest:
                _upsert_states(store, tool.name, latest.values(), utilisation, now)
            if changes.complete:
                # A full listing: what it did not name is gone.
                store.execute(
                    scope_states.update()
                    .where(_of(tool) & (scope_states.c.seen_at < now))
                    .values(watermark=None)
                )
            store.execute(
                catalogue_cursors.update()
                .where(catalogue_cursors.c.tool == tool.name)
                .values(cursor=changes.cursor, updated_at=now)
            )
        return Synced(len(latest), changes.complete)

    def unregistered(
        self, tool: ReportTool[Any], settings: RefreshSettings, now: float
    ) -> list[ScopeState]:
        """Scopes in the source whose partition was never asked for, by priority."""
        return self._states(tool, ~scope_states.c.registered, settings, now, None)

    def live_scopes(self, tool: ReportTool[Any]) -> set[str]:
        """Every scope the source held at the last sync (a fleet-sized read: for reconciling)."""
        return set(self._scalars(sa.select(scope_states.c.scope).where(_of(tool) & _live())))

    def gone(self, tool: ReportTool[Any]) -> list[str]:
        """Scopes the source no longer holds."""
        return self._scalars(
            sa.select(scope_states.c.scope).where(_of(tool) & scope_states.c.watermark.is_(None))
        )

    def mark_registered(self, tool: ReportTool[Any], scopes: list[str], registered: bool) -> None:
        self._update(tool, scopes, registered=registered)

    def forget(self, tool: ReportTool[Any], scopes: list[str]) -> None:
        if not scopes:
            return
        with write_transaction(self.engine) as store:
            for chunk in _chunks(scopes):
                store.execute(scope_states.delete().where(_of(tool) & _in(chunk)))

    def due(
        self, tool: ReportTool[Any], settings: RefreshSettings, now: float, limit: int
    ) -> list[ScopeState]:
        """The scopes due for a refresh, in the refresh policy's order (``limit`` of them),
        registered or not: ``unregistered_among`` tells which have no partition asked for."""
        return self._states(tool, _due(settings, now), settings, now, limit)

    def aged(
        self, tool: ReportTool[Any], settings: RefreshSettings, now: float, limit: int
    ) -> list[ScopeState]:
        """The scopes past the long maximum age (or with no report), by priority, registered or
        not."""
        old = headers.c.computed_at.is_(None) | (
            headers.c.computed_at < now - settings.low_max_age_s
        )
        return self._states(tool, old, settings, now, limit)

    def unregistered_among(self, tool: ReportTool[Any], scopes: list[str]) -> set[str]:
        """Which of ``scopes`` have no partition asked for by the discovery sensor."""
        return {
            scope
            for chunk in _chunks(scopes)
            for scope in self._scalars(
                sa.select(scope_states.c.scope).where(
                    _of(tool) & _in(chunk) & ~scope_states.c.registered
                )
            )
        }

    def freshness_changed(
        self, tool: ReportTool[Any], settings: RefreshSettings, now: float, limit: int
    ) -> list[ScopeState]:
        """The registered scopes whose freshness differs from the one last recorded (or with
        none recorded yet)."""
        fresh = _fresh(settings, now)
        differs = scope_states.c.fresh_recorded.is_(None) | (scope_states.c.fresh_recorded != fresh)
        return self._states(tool, differs, settings, now, limit)

    def counts(self, tool: ReportTool[Any], settings: RefreshSettings, now: float) -> Counts:
        """Scopes the source holds, and how many of them are due."""
        query = (
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(sa.case((_due(settings, now), 1), else_=0)), 0),
            )
            .select_from(_joined())
            .where(_of(tool) & _live())
        )
        with connect(self.engine) as store:
            total, due = store.execute(query).one()
        return Counts(total, int(due))

    def recorded_freshness(
        self, tool: ReportTool[Any], scopes: list[str]
    ) -> dict[str, bool | None]:
        """The freshness last recorded for each of ``scopes`` (None where none was)."""
        column = scope_states.c.fresh_recorded
        with connect(self.engine) as store:
            return {
                scope: recorded
                for chunk in _chunks(scopes)
                for scope, recorded in store.execute(
                    sa.select(scope_states.c.scope, column).where(_of(tool) & _in(chunk))
                )
            }

    def record_freshness(self, tool: ReportTool[Any], fresh: Mapping[str, bool]) -> None:
        """What the freshness job recorded for each scope."""
        with write_transaction(self.engine) as store:
            for value in (True, False):
                scopes = [scope for scope, is_fresh in fresh.items() if is_fresh is value]
                for chunk in _chunks(scopes):
                    store.execute(
                        scope_states.update()
                        .where(_of(tool) & _in(chunk))
                        .values(fresh_recorded=value)
                    )

    def mark_requested(self, tool: ReportTool[Any], keys: Mapping[str, str], now: float) -> None:
        """The scopes a refresh was requested for, with the request's run key."""
        if not keys:
            return
        with write_transaction(self.engine) as store:
            store.execute(
                scope_states.update()
                .where(_of(tool) & (scope_states.c.scope == sa.bindparam("wanted")))
                .values(requested_at=now, request_key=sa.bindparam("key")),
                [{"wanted": scope, "key": key} for scope, key in keys.items()],
            )

    def _states(
        self,
        tool: ReportTool[Any],
        condition: sa.ColumnElement[bool],
        settings: RefreshSettings,
        now: float,
        limit: int | None,
    ) -> list[ScopeState]:
        """The live scopes meeting ``condition``, with their stored headers, in the refresh
        policy's order."""
        high = scope_states.c.utilisation >= settings.threshold
        # A scope only a report commit has seen may have no utilisation yet: low, until a sync.
        utilisation = sa.func.coalesce(scope_states.c.utilisation, 0.0)
        query = (
            sa.select(scope_states.c.scope, utilisation, scope_states.c.watermark)
            .add_columns(*headers.c)
            .select_from(_joined())
            .where(_of(tool) & _live() & condition)
            .order_by(
                sa.case((high, 0), else_=1),
                utilisation.desc(),
                sa.func.coalesce(headers.c.computed_at, -1.0),
                scope_states.c.scope,
            )
            .limit(limit)
        )
        since = window_start(tool, now)
        with connect(self.engine) as store:
            rows = store.execute(query).all()
        return [ScopeState(row[0], row[1], row[2], _header(row[3:]), since) for row in rows]

    def _scalars(self, query: sa.Select[Any]) -> list[str]:
        with connect(self.engine) as store:
            return list(store.execute(query).scalars())

    def _update(self, tool: ReportTool[Any], scopes: list[str], **values: Any) -> None:
        if not scopes:
            return
        with write_transaction(self.engine) as store:
            for chunk in _chunks(scopes):
                store.execute(scope_states.update().where(_of(tool) & _in(chunk)).values(**values))


def _locked_cursor(store: Connection, tool: str) -> str | None:
    """The tool's cursor, its row locked until the transaction ends (created the first time)."""
    store.execute(
        dialect_insert(store)(catalogue_cursors)
        .values(tool=tool, cursor=None, updated_at=time.time())
        .on_conflict_do_nothing()
    )
    return store.execute(
        sa.select(catalogue_cursors.c.cursor)
        .where(catalogue_cursors.c.tool == tool)
        .with_for_update()
    ).scalar()


def _upsert_states(
    store: Connection,
    tool: str,
    changes: Iterable[ScopeChange],
    utilisation: Mapping[str, float],
    now: float,
) -> None:
    insert = dialect_insert(store)(scope_states)
    store.execute(
        insert.on_conflict_do_update(
            index_elements=list(_STATE_KEY),
            set_={
                name: insert.excluded[name]
                for name in ("tenant", "utilisation", "watermark", "seen_at")
            },
        ),
        [
            {
                "tool": tool,
                "scope": change.scope,
                "tenant": change.tenant,
                "utilisation": utilisation.get(change.scope, 0.0),
                "watermark": change.watermark,
                "registered": False,
                "seen_at": now,
            }
            for change in changes
        ],
    )


def _joined() -> sa.FromClause:
    return scope_states.outerjoin(
        headers, (headers.c.tool == scope_states.c.tool) & (headers.c.scope == scope_states.c.scope)
    )


def _of(tool: ReportTool[Any]) -> sa.ColumnElement[bool]:
    return scope_states.c.tool == tool.name


def _live() -> sa.ColumnElement[bool]:
    return scope_states.c.watermark.is_not(None)


def _chunks(scopes: list[str]) -> Iterator[list[str]]:
    """``scopes`` a few hundred at a time: few statements, within any database's parameters."""
    for start in range(0, len(scopes), SCOPES_PER_STATEMENT):
        yield scopes[start : start + SCOPES_PER_STATEMENT]


def _in(scopes: list[str]) -> sa.ColumnElement[bool]:
    return scope_states.c.scope.in_(scopes)


def _due(settings: RefreshSettings, now: float) -> sa.ColumnElement[bool]:
    """``refresh.due_reason`` is not None, in SQL: no report; a high scope whose source changed
    or whose report passed the maximum age; a low scope whose report passed the long one."""
    high = scope_states.c.utilisation >= settings.threshold
    return (
        headers.c.scope.is_(None)
        | (
            high
            & (
                (headers.c.watermark != scope_states.c.watermark)
                | (headers.c.computed_at < now - settings.max_age_s)
            )
        )
        | (~high & (headers.c.computed_at < now - settings.low_max_age_s))
    )


def _fresh(settings: RefreshSettings, now: float) -> sa.ColumnElement[bool]:
    """``not refresh.is_stale``, in SQL: a report, its source unchanged, younger than its limit."""
    high = scope_states.c.utilisation >= settings.threshold
    oldest = sa.case((high, now - settings.max_age_s), else_=now - settings.low_max_age_s)
    return sa.and_(
        headers.c.scope.is_not(None),
        headers.c.watermark == scope_states.c.watermark,
        headers.c.computed_at >= oldest,
    )


def _header(values: tuple[Any, ...]) -> ReportHeader | None:
    row = dict(zip(headers.c.keys(), values, strict=True))
    return None if row["scope"] is None else header_from_row(row)

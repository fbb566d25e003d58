"""What readers know of each scope without asking the source: its tenant, utilisation and watermark
as last seen (the scope's row of ``precompute_scope_states``).

Sensor ticks record what they read from the catalogue (``fleet_state.FleetState.sync``); a
committed report records what its job read (``ReportStore.commit``, in the same transaction); a
deleted scope's row goes with its report (``ReportStore.delete``). An observation never replaces
a later one, so the index is at least as new as every report: a reader compares a report's
watermark with the index's to tell whether the source changed since, without a query to the
source.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from precompute_assets.core.db import connect, dialect_insert, write_transaction
from precompute_assets.core.schema import check_store_schema, create_store_schema, scope_states

# Engines whose store was found with its tables.
_with_tables: weakref.WeakSet[Engine] = weakref.WeakSet()


@dataclass(frozen=True)
class KnownScope:
    """One scope as last seen in the source."""

    tool: str
    scope: str
    tenant: str | None
    utilisation: float | None
    watermark: str | None
    seen_at: float


class ScopeIndex:
    """The ``precompute_scopes`` table of a store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, observed: Iterable[KnownScope]) -> int:
        """Upsert what changed since the last observations; the number of rows written.

        A store no report was written to yet is left alone (a sensor tick stays a reader until
        then); the first report's commit creates the tables and records its scope.
        """
        observed = list(observed)
        if not observed or not self._has_tables():
            return 0
        create_store_schema(self.engine)
        with write_transaction(self.engine) as connection:
            stored = {
                (known.tool, known.scope): known
                for tool in {known.tool for known in observed}
                for known in _select(connection, tool)
            }
            changed = [known for known in observed if _differs(stored.get(_key(known)), known)]
            record_observations(connection, changed)
        return len(changed)

    def _has_tables(self) -> bool:
        if self.engine in _with_tables:
            return True
        with connect(self.engine) as connection:
            if not check_store_schema(connection):
                return False
        _with_tables.add(self.engine)
        return True

    def scopes(self, tool: str, tenant: str | None = None) -> list[KnownScope]:
        """The tool's scopes (of ``tenant``, if given), by scope."""
        with connect(self.engine) as connection:
            if not check_store_schema(connection):
                return []
            return _select(connection, tool, tenant)

    def get(self, tool: str, scope: str) -> KnownScope | None:
        with connect(self.engine) as connection:
            if not check_store_schema(connection):
                return None
            row = connection.execute(
                sa.select(*_COLUMNS).where(
                    (scope_states.c.tool == tool) & (scope_states.c.scope == scope)
                )
            ).first()
        return None if row is None else KnownScope(*row)


def record_observations(connection: Connection, observed: list[KnownScope]) -> None:
    """Upsert observations (in one statement), each unless the stored one is newer; a missing
    tenant or utilisation keeps the stored one."""
    if not observed:
        return
    insert = dialect_insert(connection)(scope_states)
    connection.execute(
        insert.on_conflict_do_update(
            index_elements=["tool", "scope"],
            set_={
                "tenant": sa.func.coalesce(insert.excluded.tenant, scope_states.c.tenant),
                "utilisation": sa.func.coalesce(
                    insert.excluded.utilisation, scope_states.c.utilisation
                ),
                "watermark": insert.excluded.watermark,
                "seen_at": insert.excluded.seen_at,
            },
            where=scope_states.c.seen_at <= insert.excluded.seen_at,
        ),
        [asdict(known) for known in observed],
    )


def forget(connection: Connection, tool: str, scope: str) -> None:
    connection.execute(
        scope_states.delete().where((scope_states.c.tool == tool) & (scope_states.c.scope == scope))
    )


_COLUMNS = (
    scope_states.c.tool,
    scope_states.c.scope,
    scope_states.c.tenant,
    scope_states.c.utilisation,
    scope_states.c.watermark,
    scope_states.c.seen_at,
)


def _select(connection: Connection, tool: str, tenant: str | None = None) -> list[KnownScope]:
    query = sa.select(*_COLUMNS).where(scope_states.c.tool == tool)
    if tenant is not None:
        query = query.where(scope_states.c.tenant == tenant)
    return [KnownScope(*row) for row in connection.execute(query.order_by(scope_states.c.scope))]


def _key(known: KnownScope) -> tuple[str, str]:
    return known.tool, known.scope


def _differs(stored: KnownScope | None, observed: KnownScope) -> bool:
    """Worth writing: new, or seen differently (an unchanged scope costs a tick no write)."""
    if stored is None:
        return True
    if stored.seen_at > observed.seen_at:
        return False
    return (
        (observed.tenant is not None and stored.tenant != observed.tenant)
        or stored.utilisation != observed.utilisation
        or stored.watermark != observed.watermark
    )

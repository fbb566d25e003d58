"""The durable report: polymorphic usage tables shared by every tool and entity type.

One header per ``(tool, scope)`` and usage rows keyed by ``(tool, scope, entity_type,
entity_id)``. A commit replaces a scope's header and rows in one transaction, so a reader sees
the old report or the new one, never a mix; and it is fenced by job generation, so an older job
finishing late cannot overwrite a newer report.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Engine

from precompute_assets.contract import REPORT_COLUMNS

if TYPE_CHECKING:
    import pandas as pd
from precompute_assets.core.db import (
    connect,
    dialect_insert,
    snapshot_transaction,
    write_transaction,
)
from precompute_assets.core.errors import StaleGenerationError
from precompute_assets.core.schema import (
    check_store_schema,
    create_store_schema,
    headers,
    rows_table,
)
from precompute_assets.core.scope_index import KnownScope, forget, record_observations


@dataclass(frozen=True)
class ReportHeader:
    """What a reader needs to know about a report before reading its rows."""

    tool: str
    scope: str
    generation: int
    computed_at: float
    watermark: str
    entity_count: int
    row_count: int
    unused_count: int
    batch_count: int
    shard_count: int
    duration_s: float
    utilisation: float | None = None
    run_id: str | None = None
    status: str = "complete"
    summary: dict[str, Any] = field(default_factory=dict)
    tenant: str | None = None


class ReportStore:
    """Commit and read reports in SQLite or PostgreSQL.

    Reading never writes: a store no run has written yet reads as a store without reports.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def commit(self, header: ReportHeader, rows: pd.DataFrame) -> None:
        """Replace the scope's report with ``rows`` (validated report shape) in one transaction.

        The header is upserted in place, and only over an older or equal generation: its row,
        once it exists, is what concurrent writers queue on (PostgreSQL's READ COMMITTED re-reads
        it after the wait), and a first report's insert makes a second writer wait on the key.
        """
        create_store_schema(self.engine)
        record = asdict(header)
        record["summary"] = json.dumps(header.summary, sort_keys=True)
        with write_transaction(self.engine) as connection:
            insert = dialect_insert(connection)(headers).values(**record)
            replaced = connection.execute(
                insert.on_conflict_do_update(
                    index_elements=["tool", "scope"],
                    set_={name: insert.excluded[name] for name in record if name not in _KEY},
                    where=headers.c.generation <= insert.excluded.generation,
                )
            ).rowcount
            if replaced != 1:
                stored = _read_header(connection, header.tool, header.scope)
                raise StaleGenerationError(
                    f"{header.tool}/{header.scope}: job generation {header.generation} is older "
                    f"than the stored report's generation {stored and stored.generation}; "
                    "not overwriting it"
                )
            connection.execute(
                rows_table.delete().where(
                    (rows_table.c.tool == header.tool) & (rows_table.c.scope == header.scope)
                )
            )
            if len(rows):
                connection.execute(rows_table.insert(), _row_records(header, rows))
            # The scope as its job saw it, when the job opened (unless a later look is stored).
            seen = header.computed_at - header.duration_s
            record_observations(
                connection,
                [
                    KnownScope(
                        header.tool,
                        header.scope,
                        header.tenant,
                        header.utilisation,
                        header.watermark,
                        seen,
                    )
                ],
            )

    def delete(self, tool: str, scope: str) -> None:
        """Remove a scope's report, header and rows together, and forget the scope."""
        create_store_schema(self.engine)
        with write_transaction(self.engine) as connection:
            for table in (rows_table, headers):
                connection.execute(
                    table.delete().where((table.c.tool == tool) & (table.c.scope == scope))
                )
            forget(connection, tool, scope)

    def header(self, tool: str, scope: str) -> ReportHeader | None:
        with connect(self.engine) as connection:
            return _read_header(connection, tool, scope) if self._readable(connection) else None

    def headers(
        self, tool: str, scopes: list[str] | None = None, tenant: str | None = None
    ) -> list[ReportHeader]:
        """The stored headers of one tool (of ``scopes``, of ``tenant``, if given), one query."""
        query = sa.select(headers).where(headers.c.tool == tool)
        if scopes is not None:
            query = query.where(headers.c.scope.in_(scopes))
        if tenant is not None:
            query = query.where(headers.c.tenant == tenant)
        with connect(self.engine) as connection:
            if not self._readable(connection):
                return []
            return [header_from_row(row._asdict()) for row in connection.execute(query)]

    def read(
        self, tool: str, scope: str, *, unused_only: bool = False
    ) -> tuple[ReportHeader, pd.DataFrame] | None:
        """The header and rows of one report from one snapshot, or None if there is none."""
        fetched = self._fetch(tool, scope, unused_only)
        return None if fetched is None else (fetched[0], rows_frame(fetched[1]))

    def read_records(
        self, tool: str, scope: str, *, unused_only: bool = False
    ) -> tuple[ReportHeader, list[dict[str, Any]]] | None:
        """``read`` as plain values, without pandas: ``last_used`` in unix seconds or None,
        ``detail`` a dict."""
        fetched = self._fetch(tool, scope, unused_only)
        if fetched is None:
            return None
        header, rows = fetched
        records = [dict(zip(REPORT_COLUMNS, row, strict=True)) for row in rows]
        for record in records:
            record["unused"] = bool(record["unused"])
            record["detail"] = json.loads(record["detail"]) if record["detail"] else {}
        return header, records

    def _fetch(
        self, tool: str, scope: str, unused_only: bool
    ) -> tuple[ReportHeader, list[sa.Row]] | None:
        with snapshot_transaction(self.engine) as connection:
            header = _read_header(connection, tool, scope) if self._readable(connection) else None
            if header is None:
                return None
            query = sa.select(*(rows_table.c[name] for name in REPORT_COLUMNS)).where(
                (rows_table.c.tool == tool) & (rows_table.c.scope == scope)
            )
            if unused_only:
                query = query.where(rows_table.c.unused.is_(True))
            return header, connection.execute(query.order_by(rows_table.c.entity_id)).all()

    def _readable(self, connection: sa.Connection) -> bool:
        """Whether the store has this release's tables (checked once per engine); a store that
        has none yet holds no report, one of another schema revision is refused."""
        if self.engine in _readable:
            return True
        if not check_store_schema(connection):
            return False
        _readable.add(self.engine)
        return True


# Engines whose store was found at this release's schema revision.
_readable: weakref.WeakSet[Engine] = weakref.WeakSet()
_KEY = ("tool", "scope")


def _read_header(connection: sa.Connection, tool: str, scope: str) -> ReportHeader | None:
    row = connection.execute(
        sa.select(headers).where((headers.c.tool == tool) & (headers.c.scope == scope))
    ).first()
    return None if row is None else header_from_row(row._asdict())


def header_from_row(values: Mapping[str, Any]) -> ReportHeader:
    """A header from its row's values (``summary`` as stored, JSON text)."""
    return ReportHeader(**{**values, "summary": json.loads(values["summary"])})


def _row_records(header: ReportHeader, rows: pd.DataFrame) -> list[dict[str, Any]]:
    # Plain Python values: a pandas map would turn a missing time into NaN, not NULL.
    import pandas as pd

    return [
        {
            "tool": header.tool,
            "scope": header.scope,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "unused": bool(unused),
            "usage_count": int(count),
            "last_used": None if pd.isna(used) else int(used.timestamp()),
            "detail": json.dumps(detail, sort_keys=True) if isinstance(detail, dict) else None,
        }
        for entity_type, entity_id, unused, count, used, detail in zip(
            rows["entity_type"],
            rows["entity_id"],
            rows["unused"],
            rows["usage_count"],
            rows["last_used"],
            rows["detail"],
            strict=True,
        )
    ]


def rows_frame(fetched: list[sa.Row] | list[tuple[Any, ...]]) -> pd.DataFrame:
    """Stored rows (``REPORT_COLUMNS`` in order, times in unix seconds, details as JSON text or
    dicts) as the report's DataFrame.

    Typed columns built once from plain lists: several times faster than a frame of Row objects
    converted column by column, which is most of a read's time. pandas is imported here, so
    that a read of records never pays for it.
    """
    import numpy as np
    import pandas as pd

    columns = list(zip(*fetched, strict=True)) if fetched else [()] * len(REPORT_COLUMNS)
    by_name = dict(zip(REPORT_COLUMNS, columns, strict=True))
    last_used = np.array(by_name["last_used"], dtype="datetime64[s]")
    return pd.DataFrame(
        {
            "entity_type": list(by_name["entity_type"]),
            "entity_id": list(by_name["entity_id"]),
            "unused": np.array(by_name["unused"], dtype=bool),
            "usage_count": np.array(by_name["usage_count"], dtype=np.int64),
            "last_used": pd.Series(last_used).dt.tz_localize("UTC"),
            "detail": [_detail(detail) for detail in by_name["detail"]],
        },
        columns=list(REPORT_COLUMNS),
    )


def _detail(stored: str | dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(stored, dict):
        return stored
    return json.loads(stored) if stored else {}

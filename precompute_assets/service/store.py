"""The report store as the service reads it: keys, scopes, headers and rows, never the source.

Engines are made on first use and remade after a failure, so the service starts, and answers
503, while the store is unreachable, and serves again once it is back. Reads use read-only
connections; only the refresh lock (``writer``) writes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Engine

from precompute_assets.core.api_keys import ApiKey, find_key
from precompute_assets.core.db import check_reachable, connect, create_engine_for
from precompute_assets.core.report_store import ReportHeader, ReportStore
from precompute_assets.core.schema import check_store_schema, headers, scopes_table
from precompute_assets.core.scope_index import KnownScope, ScopeIndex


@dataclass(frozen=True)
class ScopeFacts:
    """What one request needs to know of a scope before its report: whose it is, the stored
    generation (None: no report yet) and the source's watermark as last seen."""

    tenant: str | None
    generation: int | None
    source_watermark: str | None


_HEADER_AND_INDEX = (
    sa.select(
        headers.c.generation,
        sa.func.coalesce(scopes_table.c.tenant, headers.c.tenant),
        scopes_table.c.watermark,
    )
    .select_from(
        headers.outerjoin(
            scopes_table,
            (scopes_table.c.tool == headers.c.tool) & (scopes_table.c.scope == headers.c.scope),
        )
    )
    .where((headers.c.tool == sa.bindparam("tool")) & (headers.c.scope == sa.bindparam("scope")))
)
_INDEX_ONLY = sa.select(scopes_table.c.tenant, scopes_table.c.watermark).where(
    (scopes_table.c.tool == sa.bindparam("tool")) & (scopes_table.c.scope == sa.bindparam("scope"))
)


class ServiceStore:
    """Everything the service reads, from the store at ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._reader: Engine | None = None
        self._writer: Engine | None = None
        self._has_tables = False
        self._lock = threading.Lock()

    @property
    def reader(self) -> Engine:
        with self._lock:
            if self._reader is None:
                self._reader = create_engine_for(self.url, read_only=True)
            return self._reader

    @property
    def writer(self) -> Engine:
        """For the refresh lock: the only writes the service makes."""
        with self._lock:
            if self._writer is None:
                self._writer = create_engine_for(self.url)
            return self._writer

    def ready(self) -> None:
        """DatabaseUnavailableError (or SchemaVersionError) unless the store answers."""
        with connect(check_reachable(self.reader)) as connection:
            check_store_schema(connection)

    def caller(self, key: str) -> ApiKey | None:
        """The key's record, if it is known and not revoked."""
        with connect(self.reader) as connection:
            if not self._tables(connection):
                return None
            return find_key(connection, key)

    def facts(self, tool: str, scope: str) -> ScopeFacts | None:
        """None for a scope the store does not know (no report, never seen by a sensor)."""
        with connect(self.reader) as connection:
            if not self._tables(connection):
                return None
            values = {"tool": tool, "scope": scope}
            row = connection.execute(_HEADER_AND_INDEX, values).first()
            if row is not None:
                return ScopeFacts(row[1], row[0], row[2])
            row = connection.execute(_INDEX_ONLY, values).first()
            return None if row is None else ScopeFacts(row[0], None, row[1])

    def known(self, tool: str, scope: str) -> KnownScope | None:
        return ScopeIndex(self.reader).get(tool, scope)

    def header(self, tool: str, scope: str) -> ReportHeader | None:
        return ReportStore(self.reader).header(tool, scope)

    def report(self, tool: str, scope: str) -> tuple[ReportHeader, list[dict]] | None:
        """The header and rows of the stored report, from one snapshot."""
        return ReportStore(self.reader).read_records(tool, scope)

    def scopes(self, tool: str, tenant: str | None) -> list[tuple[KnownScope, ReportHeader | None]]:
        """The tool's known scopes (of ``tenant``; None: all) with their stored headers."""
        known = ScopeIndex(self.reader).scopes(tool, tenant)
        stored = {h.scope: h for h in ReportStore(self.reader).headers(tool, tenant=tenant)}
        return [(scope, stored.get(scope.scope)) for scope in known]

    def _tables(self, connection: sa.Connection) -> bool:
        # Checked until found: a store gets its tables with its first write.
        if not self._has_tables:
            self._has_tables = check_store_schema(connection)
        return self._has_tables

    def dispose(self) -> None:
        for engine in (self._reader, self._writer):
            if engine is not None:
                engine.dispose()

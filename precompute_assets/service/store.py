"""The report store as the service reads it: keys, scopes, headers and rows, never the source.

Engines are made on first use, so the service starts, and answers 503, while the store is
unreachable, and serves again once it is back. Reads use read-only connections; only the refresh
lock (``writer``) writes. The two lookups a request makes (its key; the scope's tenant and
generation) run on one long-lived driver connection per thread: SQLAlchemy's per-statement work
(about 100 µs here) would otherwise cost more than the rest of a request. A key found is trusted
for ``key_cache_s`` (``PRECOMPUTE_SERVICE_KEY_CACHE_S``) before it is looked up again: a revocation
takes effect within that time. The generation is looked up on every request: a replaced report is
served at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from precompute_assets.core.api_keys import ApiKey, key_hash, key_lookup
from precompute_assets.core.db import check_reachable, connect, create_engine_for, unavailable
from precompute_assets.core.report_store import ReportHeader, ReportStore
from precompute_assets.core.schema import check_store_schema, headers, scope_states
from precompute_assets.core.scope_index import KnownScope, ScopeIndex

# Past this many keys in a process's cache it starts again empty: a bound on memory, never hit by
# a deployment's real keys.
MAX_CACHED_KEYS = 10_000


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
        sa.func.coalesce(scope_states.c.tenant, headers.c.tenant),
        scope_states.c.watermark,
    )
    .select_from(
        headers.outerjoin(
            scope_states,
            (scope_states.c.tool == headers.c.tool) & (scope_states.c.scope == headers.c.scope),
        )
    )
    .where((headers.c.tool == sa.bindparam("tool")) & (headers.c.scope == sa.bindparam("scope")))
)
_INDEX_ONLY = sa.select(scope_states.c.tenant, scope_states.c.watermark).where(
    (scope_states.c.tool == sa.bindparam("tool")) & (scope_states.c.scope == sa.bindparam("scope"))
)


class Lookup:
    """A SELECT of at most one row, compiled once for the engine's driver."""

    def __init__(self, statement: sa.Select, engine: Engine) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.sql = compiled.string
        self.positions = compiled.positiontup  # None for drivers with named parameters

    def parameters(self, values: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        return values if self.positions is None else tuple(values[k] for k in self.positions)


class ServiceStore:
    """Everything the service reads, from the store at ``url``."""

    def __init__(self, url: str, key_cache_s: float = 0.0) -> None:
        self.url = url
        self.key_cache_s = key_cache_s
        self._keys: dict[str, tuple[ApiKey, float]] = {}  # key hash: the key, trusted until
        self._reader: Engine | None = None
        self._writer: Engine | None = None
        self._has_tables = False
        self._lock = threading.Lock()
        self._lookup_engine: Engine | None = None
        self._local = threading.local()  # each thread's driver connection
        self._lookups: dict[int, Lookup] = {}

    @property
    def reader(self) -> Engine:
        with self._lock:
            if self._reader is None:
                self._reader = create_engine_for(self.url, read_only=True)
            return self._reader

    @property
    def lookup_engine(self) -> Engine:
        """Unpooled: each thread keeps its own connection (``_driver_connection``)."""
        with self._lock:
            if self._lookup_engine is None:
                self._lookup_engine = create_engine_for(
                    self.url, read_only=True, poolclass=sa.pool.NullPool
                )
            return self._lookup_engine

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
        """The key's record, if it is known and was not revoked ``key_cache_s`` ago. Unknown
        keys are not remembered: a key made a moment ago works at once."""
        hashed = key_hash(key)
        now = time.monotonic()
        cached = self._keys.get(hashed)
        if cached is not None and now < cached[1]:
            return cached[0]
        row = self._first(key_lookup, {"key_hash": hashed})
        if row is None or row[-1] is not None:
            self._keys.pop(hashed, None)
            return None
        found = ApiKey(*row)
        if self.key_cache_s > 0:
            if len(self._keys) >= MAX_CACHED_KEYS:
                self._keys.clear()
            self._keys[hashed] = (found, now + self.key_cache_s)
        return found

    def facts(self, tool: str, scope: str) -> ScopeFacts | None:
        """None for a scope the store does not know (no report, never seen by a sensor)."""
        values = {"tool": tool, "scope": scope}
        row = self._first(_HEADER_AND_INDEX, values)
        if row is not None:
            return ScopeFacts(row[1], row[0], row[2])
        row = self._first(_INDEX_ONLY, values)
        return None if row is None else ScopeFacts(row[0], None, row[1])

    def _first(self, statement: sa.Select, values: dict[str, Any]) -> tuple[Any, ...] | None:
        """The statement's first row, on this thread's driver connection; None before the store
        has tables."""
        if not self._has_tables:
            with connect(self.reader) as connection:
                if not self._tables(connection):
                    return None
        engine = self.lookup_engine
        lookup = self._lookups.get(id(statement))
        if lookup is None:
            lookup = self._lookups.setdefault(id(statement), Lookup(statement, engine))
        connection = self._driver_connection(engine)
        try:
            cursor = connection.cursor()
            cursor.execute(lookup.sql, lookup.parameters(values))
            row = cursor.fetchone()
            cursor.close()
        except engine.dialect.loaded_dbapi.Error as error:
            # A broken connection is dropped; the next lookup connects again.
            self._local.connection = None
            connection.invalidate()
            raise unavailable(engine, error) from error
        return None if row is None else tuple(row)

    def _driver_connection(self, engine: Engine) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            try:
                connection = engine.raw_connection()
            except sa.exc.OperationalError as error:
                raise unavailable(engine, error) from error
            if engine.dialect.name == "postgresql":
                # Each lookup its own transaction: none is left open between requests.
                connection.driver_connection.autocommit = True
            self._local.connection = connection
        return connection

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
        for engine in (self._reader, self._writer, self._lookup_engine):
            if engine is not None:
                engine.dispose()

"""The lock that coalesces on-demand refreshes of one scope, across processes and machines.

Whoever asks for a refresh (a service worker, ``precompute refresh``) holds the scope's row in
``precompute_refresh_requests`` while it looks for a run in flight and, finding none, launches
one. The next requester waits for the row, then finds the run the first one launched: a hundred
requests at once start one run. The row also keeps the last run launched on demand.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from precompute_assets.core.db import dialect_insert, write_transaction
from precompute_assets.core.schema import create_store_schema, refresh_requests


@dataclass
class HeldRequest:
    """The scope's refresh row, locked until the ``locked_refresh_request`` block ends."""

    connection: Connection
    tool: str
    scope: str

    def record(self, run_id: str) -> None:
        """Remember ``run_id`` as the scope's last on-demand run (committed with the block)."""
        self.connection.execute(
            refresh_requests.update()
            .where(
                (refresh_requests.c.tool == self.tool) & (refresh_requests.c.scope == self.scope)
            )
            .values(run_id=run_id, requested_at=time.time())
        )


@contextmanager
def locked_refresh_request(engine: Engine, tool: str, scope: str) -> Iterator[HeldRequest]:
    """Hold the scope's refresh row for the block (creating it the first time).

    On PostgreSQL the row is locked (``FOR UPDATE``); on SQLite the write transaction holds the
    database's write lock, which serialises requesters the same way.
    """
    create_store_schema(engine)
    with write_transaction(engine) as connection:
        connection.execute(
            dialect_insert(connection)(refresh_requests)
            .values(tool=tool, scope=scope)
            .on_conflict_do_nothing()
        )
        connection.execute(
            sa.select(refresh_requests.c.tool)
            .where((refresh_requests.c.tool == tool) & (refresh_requests.c.scope == scope))
            .with_for_update()
        )
        yield HeldRequest(connection, tool, scope)

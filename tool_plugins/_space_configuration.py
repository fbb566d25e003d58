"""Removing entities from a space's configuration, with its undo: the remediation the built-in
tools share, since a space's fields and work types are both rows of an association table."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, TextClause, bindparam, text

from precompute_assets import Remediation


class RemoveFromSpace(Remediation):
    """Delete the entities' rows ``(space_id, column)`` of ``table``; undo inserts exactly the
    rows that were deleted. ``still_unused`` selects, of the ids ``:ids`` of space
    ``:space_id``, those that still qualify (the batch's params are bound too: ``:since``)."""

    batch_size = 100

    def __init__(self, table: str, column: str, still_unused: TextClause, action: str) -> None:
        self.action = action
        self.still_unused = still_unused.bindparams(bindparam("ids", expanding=True))
        where = f" WHERE space_id = :space_id AND {column} IN :ids"
        self.present = text(f"SELECT {column} FROM {table}{where}").bindparams(
            bindparam("ids", expanding=True)
        )
        self.remove = text(f"DELETE FROM {table}{where}").bindparams(
            bindparam("ids", expanding=True)
        )
        self.restore = text(
            f"INSERT INTO {table} (space_id, {column}) VALUES (:space_id, :id)"
            " ON CONFLICT DO NOTHING"
        )

    def verify(
        self, source: Connection, scope: str, entities: Sequence[str], params: Mapping[str, Any]
    ) -> Collection[str]:
        found = source.execute(self.still_unused, {**params, "ids": _ids(entities)})
        return {str(entity) for entity in found.scalars()}

    def apply(
        self, source: Connection, scope: str, entities: Sequence[str], params: Mapping[str, Any]
    ) -> dict[str, list[int]]:
        keys = {"space_id": params["space_id"], "ids": _ids(entities)}
        removed = sorted(source.execute(self.present, keys).scalars())
        source.execute(self.remove, keys)
        return {"removed": removed}

    def undo(
        self, source: Connection, scope: str, undo: dict[str, list[int]], params: Mapping[str, Any]
    ) -> None:
        rows = [{"space_id": params["space_id"], "id": entity} for entity in undo["removed"]]
        if rows:
            source.execute(self.restore, rows)


def _ids(entities: Sequence[str]) -> list[int]:
    return [int(entity) for entity in entities]

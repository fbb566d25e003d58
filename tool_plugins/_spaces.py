"""What every tool scoped by a space of the demo source shares: its extent and bulk queries."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from sqlalchemy import Connection, bindparam, text

from precompute_assets.contract import Extent, ReportTool, ScopeNotFoundError

C = TypeVar("C")

# Up to this many asked-for scopes, the bulk queries look them up by key.
FEW_SCOPES = 100


class SpaceTool(ReportTool[C]):
    """A tool with one scope per space, scanning the space's work items by id.

    Subclasses name the association table whose size against ``limit`` is the utilisation,
    and write the four computing methods: ``scan``, ``merge``, ``empty`` and ``finalise``.
    """

    association_table: ClassVar[str]  # space_fields or space_work_types
    limit: ClassVar[int]

    def initialise(self, source: Connection, scope: str) -> Extent:
        return space_extent(source, scope)

    def scopes(self, source: Connection) -> list[str]:
        return space_keys(source)

    def utilisation(self, source: Connection, scopes: Sequence[str]) -> dict[str, float]:
        counts = association_counts(source, self.association_table, scopes)
        return {scope: count / self.limit for scope, count in counts.items()}

    def watermark(self, source: Connection, scopes: Sequence[str]) -> dict[str, str]:
        return space_watermarks(source, scopes)


def merge_counts_and_latest(
    a: dict[str, list[int]], b: dict[str, list[int]]
) -> dict[str, list[int]]:
    """Merge ``{entity: [count, latest time]}``: counts add, times take the later one."""
    merged = dict(a)
    for entity, (count, latest) in b.items():
        if entity in merged:
            known_count, known_latest = merged[entity]
            merged[entity] = [known_count + count, max(known_latest, latest)]
        else:
            merged[entity] = [count, latest]
    return merged


def space_extent(source: Connection, scope: str) -> Extent:
    """The space's work-item key range, with its watermark and the job's reference time."""
    row = source.execute(
        text(
            "SELECT s.id, s.updated_at, MIN(w.id), MAX(w.id), COUNT(w.id), MAX(w.updated_at)"
            " FROM spaces s LEFT JOIN work_items w ON w.space_id = s.id"
            " WHERE s.key = :scope GROUP BY s.id, s.updated_at"
        ),
        {"scope": scope},
    ).first()
    if row is None:
        raise ScopeNotFoundError(f"no space {scope!r} in the source")
    space_id, config_at, first, last, count, items_at = row
    params: dict[str, Any] = {"space_id": space_id, "as_of": int(time.time())}
    return Extent(
        first_key=first or 0,
        last_key=last or -1,
        entity_count=count,
        watermark=_watermark(count, items_at, config_at),
        params=params,
    )


def space_keys(source: Connection) -> list[str]:
    return [key for (key,) in source.execute(text("SELECT key FROM spaces ORDER BY key"))]


def space_watermarks(source: Connection, scopes: Sequence[str]) -> dict[str, str]:
    """Every asked-for space's watermark, in one query.

    A few spaces (a reader's one) are looked up by key, each counted on its own index range;
    many (a sensor tick's) in one grouped pass over all spaces, cheaper than a long IN list.
    """
    wanted = set(scopes)
    if len(wanted) <= FEW_SCOPES:
        statement = text(
            "SELECT s.key, s.updated_at,"
            " (SELECT COUNT(*) FROM work_items w WHERE w.space_id = s.id),"
            " (SELECT MAX(w.updated_at) FROM work_items w WHERE w.space_id = s.id)"
            " FROM spaces s WHERE s.key IN :keys"
        ).bindparams(bindparam("keys", expanding=True))
        result = source.execute(statement, {"keys": sorted(wanted)})
    else:
        result = source.execute(
            text(
                "SELECT s.key, s.updated_at, COUNT(w.id), MAX(w.updated_at)"
                " FROM spaces s LEFT JOIN work_items w ON w.space_id = s.id"
                " GROUP BY s.key, s.updated_at"
            )
        )
    return {
        key: _watermark(count, items_at, config_at)
        for key, config_at, count, items_at in result
        if key in wanted
    }


def association_counts(source: Connection, table: str, scopes: Sequence[str]) -> dict[str, int]:
    """How many rows of an association table (space_fields, space_work_types) each space has."""
    wanted = set(scopes)
    result = source.execute(
        text(
            f"SELECT s.key, COUNT(a.space_id) FROM spaces s"
            f" LEFT JOIN {table} a ON a.space_id = s.id GROUP BY s.key"
        )
    )
    return {key: count for key, count in result if key in wanted}


def _watermark(item_count: int, items_at: int | None, config_at: int | None) -> str:
    # Counting items catches deletions, which a latest-update time alone would miss.
    return f"{item_count}:{items_at or 0}:{config_at or 0}"

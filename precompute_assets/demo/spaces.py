"""What every tool scoped by a space of the demo source shares: its extent and bulk queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from sqlalchemy import Connection, TextClause, bindparam, text

from precompute_assets.contract import Extent, ReportTool, ScopeNotFoundError

C = TypeVar("C")

# Up to this many asked-for scopes, the bulk queries look them up by key.
FEW_SCOPES = 100

# entity id -> [uses in the window, latest use at or before as_of (None: none), uses without a
# time, uses dated after as_of]
Usage = dict[str, list[Any]]


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


def scan_usage(
    source: Connection, counts: TextClause, late: TextClause, params: Mapping[str, Any]
) -> Usage:
    """One batch's ``Usage`` from two aggregate queries over the batch's rows.

    ``counts`` gives (entity, uses, uses before ``since``, latest time, uses with a time): four
    cheap aggregates, close to the cost of the query alone. Only where some use is dated after
    ``as_of`` (rare: clock skew, or a write while the job runs) does ``late`` give (entity,
    latest time up to ``as_of``, uses after it) for the entities that have such uses.
    """
    usage: Usage = {}
    any_late = False
    for entity, uses, before, latest, timed in source.execute(counts, params):
        usage[str(entity)] = [int(uses) - int(before or 0), latest, int(uses) - int(timed), 0]
        any_late = any_late or (latest is not None and latest > params["as_of"])
    if any_late:
        for entity, latest, after in source.execute(late, params):
            usage[str(entity)][1] = latest
            usage[str(entity)][3] = int(after)
    return usage


def merge_usage(a: Usage, b: Usage) -> Usage:
    """Counts add; the latest time is the later one (a missing time loses)."""
    merged = dict(a)
    for entity, (recent, latest, untimed, late) in b.items():
        if entity not in merged:
            merged[entity] = [recent, latest, untimed, late]
            continue
        known_recent, known_latest, known_untimed, known_late = merged[entity]
        times = [t for t in (known_latest, latest) if t is not None]
        merged[entity] = [
            known_recent + recent,
            max(times) if times else None,
            known_untimed + untimed,
            known_late + late,
        ]
    return merged


def usage_of(usage: Usage, entity: str, uses: str) -> tuple[int, int | None, dict[str, Any]]:
    """One entity's uses in the window, its last use, and its source anomalies for ``detail``.

    A use without a time, or dated after the job's reference time (clock skew, or written while
    the job ran), still counts as a use: the entity is in use. It is no last-used time, and is
    listed under ``detail["anomalies"]`` (``<uses>_without_time``, ``<uses>_after_as_of``).
    """
    recent, latest, untimed, late = usage.get(entity, (0, None, 0, 0))
    anomalies = {
        name: count
        for name, count in ((f"{uses}_without_time", untimed), (f"{uses}_after_as_of", late))
        if count
    }
    return recent, latest, {"anomalies": anomalies} if anomalies else {}


def space_extent(source: Connection, scope: str) -> Extent:
    """The space's work-item key range, with its change version as the watermark."""
    row = source.execute(
        text(
            "SELECT s.id,"
            " COALESCE((SELECT c.version FROM space_changes c WHERE c.space_id = s.id), 0),"
            " MIN(w.id), MAX(w.id), COUNT(w.id)"
            " FROM spaces s LEFT JOIN work_items w ON w.space_id = s.id"
            " WHERE s.key = :scope GROUP BY s.id"
        ),
        {"scope": scope},
    ).first()
    if row is None:
        raise ScopeNotFoundError(f"no space {scope!r} in the source")
    space_id, version, first, last, count = row
    return Extent(
        first_key=first or 0,
        last_key=last or -1,
        entity_count=count,
        watermark=str(version),
        params={"space_id": space_id},
    )


def space_keys(source: Connection) -> list[str]:
    return [key for (key,) in source.execute(text("SELECT key FROM spaces ORDER BY key"))]


def space_watermarks(source: Connection, scopes: Sequence[str]) -> dict[str, str]:
    """Every asked-for space's change version, in one query.

    The demo source's triggers move a space's version on every write to a table the tools read
    (``precompute_assets.demo.source.changes``), so the version covers every input of a report.
    A few spaces (a reader's one) are looked up by key; many (a sensor tick's) in one pass.
    """
    wanted = set(scopes)
    query = (
        "SELECT s.key, COALESCE(c.version, 0) FROM spaces s"
        " LEFT JOIN space_changes c ON c.space_id = s.id"
    )
    if len(wanted) <= FEW_SCOPES:
        statement = text(f"{query} WHERE s.key IN :keys").bindparams(
            bindparam("keys", expanding=True)
        )
        result = source.execute(statement, {"keys": sorted(wanted)})
    else:
        result = source.execute(text(query))
    return {key: str(version) for key, version in result if key in wanted}


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

"""Accumulators ready made: a tool built on one writes only ``scan`` and ``finalise``.

``UsageTool`` counts each entity's uses and keeps its latest, the shape of most usage reports.
Its accumulator maps an entity id to ``[uses, latest, uses without a time, uses after as_of]``:

- *uses* counts uses in the report's window, those without a time or dated after the job's
  reference time included (the entity is in use, whatever its clock says);
- *latest* is the latest use time up to ``as_of`` (unix seconds), or None;
- the last two count the uses the report will list as source anomalies.

Fill it in ``scan`` with ``count_uses`` (rows of entity, uses, latest) or, to catch odd times
in SQL, ``scan_usage``; read it in ``finalise`` with ``usage_of``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from precompute_assets.contract import ReportTool

if TYPE_CHECKING:
    from sqlalchemy import Connection, TextClause

Usage = dict[str, list[Any]]


class UsageTool(ReportTool[Usage]):
    """A report tool whose accumulator is ``Usage``: ``merge`` and ``empty`` are written."""

    def merge(self, accumulators: Sequence[Usage]) -> Usage:
        """Counts add, the latest time is the later one; the first accumulator is the result."""
        merged, *others = accumulators
        for other in others:
            for entity, (uses, latest, untimed, late) in other.items():
                known = merged.get(entity)
                if known is None:
                    merged[entity] = [uses, latest, untimed, late]
                    continue
                known[0] += uses
                known[2] += untimed
                known[3] += late
                if latest is not None and (known[1] is None or latest > known[1]):
                    known[1] = latest
        return merged

    def empty(self) -> Usage:
        return {}


def count_uses(rows: Iterable[Sequence[Any]]) -> Usage:
    """``Usage`` from rows of (entity, uses, latest use time or None), as a GROUP BY gives."""
    return {
        str(entity): [int(uses), None if latest is None else int(latest), 0, 0]
        for entity, uses, latest in rows
    }


def scan_usage(
    source: Connection, counts: TextClause, late: TextClause, params: Mapping[str, Any]
) -> Usage:
    """One batch's ``Usage`` from two aggregate queries over the batch's rows, with odd times.

    ``counts`` gives (entity, uses, uses before ``since``, latest time, uses with a time): four
    cheap aggregates. Only where some use is dated after ``as_of`` (rare: clock skew, or a write
    while the job runs) does ``late`` give (entity, latest time up to ``as_of``, uses after it)
    for the entities that have such uses.
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


def usage_of(total: Usage, entity: str, uses: str) -> tuple[int, int | None, dict[str, Any]]:
    """One entity's uses, its last use, and its source anomalies for ``detail``.

    The anomalies are named after ``uses`` (``values`` gives ``values_without_time`` and
    ``values_after_as_of``) and returned as ``{"anomalies": {...}}``, or ``{}`` if none.
    """
    count, latest, untimed, late = total.get(entity, (0, None, 0, 0))
    anomalies = {
        name: number
        for name, number in ((f"{uses}_without_time", untimed), (f"{uses}_after_as_of", late))
        if number
    }
    return count, latest, {"anomalies": anomalies} if anomalies else {}

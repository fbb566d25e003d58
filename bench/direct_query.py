"""The direct query: the unused_fields report of one space in one SQL statement.

This is the physical-limit proxy the framework is judged against: what a user would write to
compute the report on request, with no orchestration, no batches, no ledger and no commit.
The statement is correct for any source, whatever the space's work-item ids; it computes the
same columns the tool reports (usage in the two-year window, last use, on a screen, origin,
unused) for every field associated with the space.

Only the usage part can be written in several ways; ``FORMULATIONS`` holds the correct ones, and
the bench times each and keeps the fastest. ``CONTIGUOUS_IDS`` is timed apart and never chosen:
it assumes that the space's work items, and only they, fill the id range between its first and
last item, which the demo source guarantees but a real source does not.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Connection, text

# The query's parameters, as the tool fixed them for the stored report: space_id, as_of, since.
ReportParams = dict[str, int]

_AGGREGATES = (
    "SELECT v.field_id, SUM(CASE WHEN v.updated_at >= :since THEN 1 ELSE 0 END) AS recent,"
    " MAX(v.updated_at) AS latest"
)
_BOUNDS = (
    " v.work_item_id BETWEEN (SELECT MIN(id) FROM work_items WHERE space_id = :space_id)"
    " AND (SELECT MAX(id) FROM work_items WHERE space_id = :space_id)"
)
_GROUP = " AND v.updated_at <= :as_of GROUP BY v.field_id"

# Every formulation's usage part: per field, values in the window and the latest value time.
FORMULATIONS: dict[str, str] = {
    # The obvious one: join each value to its work item and keep the space's.
    "join": (
        f"{_AGGREGATES} FROM field_values v JOIN work_items w ON w.id = v.work_item_id"
        f" WHERE w.space_id = :space_id{_GROUP}"
    ),
    # A semi-join: the values whose work item is among the space's.
    "in_subquery": (
        f"{_AGGREGATES} FROM field_values v"
        f" WHERE v.work_item_id IN (SELECT id FROM work_items WHERE space_id = :space_id){_GROUP}"
    ),
    # The join, with the scan narrowed to the space's id range: the join still checks the space,
    # so other spaces' items inside the range are excluded (what the tool's scan does per batch).
    "bounded_join": (
        f"{_AGGREGATES} FROM field_values v JOIN work_items w ON w.id = v.work_item_id"
        f" WHERE{_BOUNDS} AND w.space_id = :space_id{_GROUP}"
    ),
}
# Not correct in general: no check that an item in the range belongs to the space.
CONTIGUOUS_IDS = f"{_AGGREGATES} FROM field_values v WHERE{_BOUNDS}{_GROUP}"

_REPORT = """
WITH usage AS ({usage})
SELECT
  f.id AS field_id,
  COALESCE(u.recent, 0) AS usage_count,
  u.latest AS last_used,
  f.origin,
  f.name,
  f.created_at,
  CASE WHEN EXISTS (
    SELECT 1 FROM space_screens ss JOIN screen_fields sf ON sf.screen_id = ss.screen_id
    WHERE ss.space_id = a.space_id AND sf.field_id = f.id
  ) THEN 1 ELSE 0 END AS on_screen
FROM space_fields a
JOIN fields f ON f.id = a.field_id
LEFT JOIN usage u ON u.field_id = a.field_id
WHERE a.space_id = :space_id
ORDER BY f.id
"""


@dataclass(frozen=True)
class Timed:
    seconds: float
    rows: pd.DataFrame


def report_sql(usage: str) -> str:
    return _REPORT.format(usage=usage)


def run_report(source: Connection, usage: str, params: ReportParams) -> Timed:
    """Run the one-statement report and fetch every row; the clock covers both."""
    started = time.perf_counter()
    fetched = source.execute(text(report_sql(usage)), params).all()
    seconds = time.perf_counter() - started
    return Timed(seconds, _comparable(pd.DataFrame(fetched, columns=list(fetched[0]._fields))))


def _comparable(direct: pd.DataFrame) -> pd.DataFrame:
    """The direct rows in the comparable shape of ``framework_rows``, unused computed as the
    tool defines it: no value in two years, on no screen, made by an admin."""
    return pd.DataFrame(
        {
            "entity_id": direct["field_id"].astype(str),
            "unused": (direct["usage_count"] == 0)
            & (direct["on_screen"] == 0)
            & (direct["origin"] == "admin"),
            "usage_count": direct["usage_count"].astype("int64"),
            "last_used": direct["last_used"].map(_optional_int).astype("Int64"),
            "on_screen": direct["on_screen"].astype(bool),
            "origin": direct["origin"],
        }
    ).reset_index(drop=True)


def framework_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """A stored report's rows (``ReportStore.read``) in the shape compared with the direct ones."""
    ordered = rows.assign(key=rows["entity_id"].astype(int)).sort_values("key")
    return pd.DataFrame(
        {
            "entity_id": ordered["entity_id"].astype(str),
            "unused": ordered["unused"].astype(bool),
            "usage_count": ordered["usage_count"].astype("int64"),
            "last_used": ordered["last_used"]
            .map(lambda t: None if pd.isna(t) else int(t.timestamp()))
            .astype("Int64"),
            "on_screen": ordered["detail"].map(lambda d: bool(d["on_screen"])),
            "origin": ordered["detail"].map(lambda d: d["origin"]),
        }
    ).reset_index(drop=True)


def same_rows(direct: pd.DataFrame, framework: pd.DataFrame) -> bool:
    return direct.equals(framework)


def report_params(summary: Mapping[str, Any]) -> ReportParams:
    """The space and reference times a stored report was computed for (its header summary)."""
    params = summary["params"]
    return {name: int(params[name]) for name in ("space_id", "as_of", "since")}


def _optional_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)

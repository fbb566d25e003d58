"""Reports computed by one independent SQL query each, straight over the demo source.

Written apart from the tools (correlated subqueries instead of batch aggregates) so that a test
comparing the two would catch a wrong batch cut, a lost batch or a wrong merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from sqlalchemy import Connection, text


def unused_fields_truth(source: Connection, scope: str, params: Mapping[str, Any]) -> pd.DataFrame:
    """The report for the reference times of the job (``as_of``, ``since``) in ``params``.

    A value without a time, or after ``as_of``, is a use but no last-used time.
    """
    query = text(
        """
        SELECT f.id AS entity_id, f.origin,
          (SELECT COUNT(*) FROM field_values v JOIN work_items w ON w.id = v.work_item_id
            WHERE w.space_id = s.id AND v.field_id = f.id
              AND (v.updated_at >= :since OR v.updated_at IS NULL)) AS usage_count,
          (SELECT MAX(v.updated_at) FROM field_values v JOIN work_items w ON w.id = v.work_item_id
            WHERE w.space_id = s.id AND v.field_id = f.id AND v.updated_at <= :as_of) AS last_used,
          (SELECT COUNT(*) FROM space_screens ss
            JOIN screen_fields sf ON sf.screen_id = ss.screen_id
            WHERE ss.space_id = s.id AND sf.field_id = f.id) AS screens
        FROM spaces s JOIN space_fields a ON a.space_id = s.id JOIN fields f ON f.id = a.field_id
        WHERE s.key = :scope ORDER BY f.id
        """
    )
    rows = pd.DataFrame(
        source.execute(
            query, {"scope": scope, "as_of": params["as_of"], "since": params["since"]}
        ).all(),
        columns=["entity_id", "origin", "usage_count", "last_used", "screens"],
    )
    rows["unused"] = (
        (rows["usage_count"] == 0) & (rows["screens"] == 0) & (rows["origin"] == "admin")
    )
    return _normalise(rows)


def unused_work_types_truth(
    source: Connection, scope: str, params: Mapping[str, Any]
) -> pd.DataFrame:
    """The report for the job's reference time ``as_of`` in ``params``."""
    query = text(
        """
        SELECT t.id AS entity_id,
          (SELECT COUNT(*) FROM work_items w WHERE w.space_id = s.id AND w.work_type_id = t.id),
          (SELECT MAX(w.created_at) FROM work_items w
            WHERE w.space_id = s.id AND w.work_type_id = t.id AND w.created_at <= :as_of)
        FROM spaces s JOIN space_work_types a ON a.space_id = s.id
        JOIN work_types t ON t.id = a.work_type_id WHERE s.key = :scope ORDER BY t.id
        """
    )
    rows = pd.DataFrame(
        source.execute(query, {"scope": scope, "as_of": params["as_of"]}).all(),
        columns=["entity_id", "usage_count", "last_used"],
    )
    rows["unused"] = rows["usage_count"] == 0
    return _normalise(rows)


def comparable(report_rows: pd.DataFrame) -> pd.DataFrame:
    """A stored report's rows in the ground truth's shape."""
    rows = report_rows.assign(
        last_used=report_rows["last_used"].map(lambda t: None if pd.isna(t) else int(t.timestamp()))
    )
    return _normalise(rows)


def _normalise(rows: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "entity_id": rows["entity_id"].astype(str),
            "unused": rows["unused"].astype(bool),
            "usage_count": rows["usage_count"].astype("int64"),
            "last_used": rows["last_used"].map(lambda t: None if pd.isna(t) else int(t)),
        }
    )
    return out.sort_values("entity_id").reset_index(drop=True)

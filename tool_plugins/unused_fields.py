"""Unused custom fields per space, by Atlassian's definition.

A field associated with a space is unused when it has no value on the space's work items in the
last two years, is on no screen of the space, and was created by an admin (system and app fields
are never proposed for removal). Utilisation is associated fields over the 700-field limit.

The two years (``window_days``) start at a UTC midnight, so every run of one day over an
unchanged space gives the same report, whichever executor or cache tier computed it. A value
without a time, or dated after the job's reference time, counts as a use and is listed among
the report's source anomalies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text

from precompute_assets import Batch, Usage, UsageTool, scan_usage, usage_of
from precompute_assets.demo import Spaces
from tool_plugins._space_configuration import RemoveFromSpace

if TYPE_CHECKING:
    import pandas as pd

# The batch's work items and their values, both by key range: the join implies the range on
# the values, and saying it lets PostgreSQL read them with one range scan of their key rather
# than a sequential scan of the whole table (which it picks for a small table: 50 times slower).
BATCH_VALUES = (
    " FROM work_items w JOIN field_values v ON v.work_item_id = w.id"
    " WHERE w.id BETWEEN :first AND :last AND v.work_item_id BETWEEN :first AND :last"
    " AND w.space_id = :space_id"
)
SCAN = text(
    "SELECT v.field_id, COUNT(*), COUNT(CASE WHEN v.updated_at < :since THEN 1 END),"
    f" MAX(v.updated_at), COUNT(v.updated_at){BATCH_VALUES} GROUP BY v.field_id"
)
LATE = text(
    "SELECT v.field_id, MAX(CASE WHEN v.updated_at <= :as_of THEN v.updated_at END),"
    f" COUNT(CASE WHEN v.updated_at > :as_of THEN 1 END){BATCH_VALUES}"
    " GROUP BY v.field_id HAVING COUNT(CASE WHEN v.updated_at > :as_of THEN 1 END) > 0"
)
FIELDS = text(
    "SELECT f.id, f.name, f.origin, f.created_at, EXISTS ("
    "  SELECT 1 FROM space_screens ss"
    "  JOIN screen_fields sf ON sf.screen_id = ss.screen_id"
    "  WHERE ss.space_id = a.space_id AND sf.field_id = f.id) AS on_screen"
    " FROM space_fields a JOIN fields f ON f.id = a.field_id"
    " WHERE a.space_id = :space_id ORDER BY f.id"
)

# Of the fields :ids of the space, those still unused in the live source: still associated, made
# by an admin, on no screen of the space, and without a value in the window (or without a time).
STILL_UNUSED = text(
    "SELECT a.field_id FROM space_fields a JOIN fields f ON f.id = a.field_id"
    " WHERE a.space_id = :space_id AND a.field_id IN :ids AND f.origin = 'admin'"
    " AND NOT EXISTS (SELECT 1 FROM space_screens ss JOIN screen_fields sf"
    "  ON sf.screen_id = ss.screen_id WHERE ss.space_id = a.space_id AND sf.field_id = a.field_id)"
    " AND a.field_id NOT IN (SELECT v.field_id FROM work_items w"
    "  JOIN field_values v ON v.work_item_id = w.id WHERE w.space_id = :space_id"
    "  AND v.field_id IN :ids AND (v.updated_at IS NULL OR v.updated_at >= :since))"
)


class UnusedFields(UsageTool):
    name = "unused_fields"
    entity_type = "field"
    description = "Fields of a space with no value in two years, on no screen, made by an admin."
    window_days = 730
    catalogue = Spaces(counted="space_fields", limit=700)
    remediation = RemoveFromSpace(
        "space_fields", "field_id", STILL_UNUSED, action="Remove from the space"
    )

    def scan(self, source: Connection, batch: Batch) -> Usage:
        params = {
            "space_id": batch.params["space_id"],
            "first": batch.first_key,
            "last": batch.last_key,
            "since": batch.params["since"],
            "as_of": batch.params["as_of"],
        }
        return scan_usage(source, SCAN, LATE, params)

    def finalise(
        self, source: Connection, scope: str, total: Usage, params: Mapping[str, Any]
    ) -> pd.DataFrame:
        import pandas as pd  # here, not at the top: reading a report need not load pandas

        records = []
        for field_id, name, origin, created_at, on_screen in source.execute(
            FIELDS, {"space_id": params["space_id"]}
        ):
            count, latest, anomalies = usage_of(total, str(field_id), "values")
            records.append(
                {
                    "entity_id": str(field_id),
                    "unused": count == 0 and not on_screen and origin == "admin",
                    "usage_count": count,
                    "last_used": latest,
                    "detail": {
                        "name": name,
                        "origin": origin,
                        "on_screen": bool(on_screen),
                        "created_at": created_at,
                        **anomalies,
                    },
                }
            )
        return pd.DataFrame.from_records(
            records, columns=["entity_id", "unused", "usage_count", "last_used", "detail"]
        )

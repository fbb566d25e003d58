"""Unused custom fields per space, by Atlassian's definition.

A field associated with a space is unused when it has no value on the space's work items in the
last two years, is on no screen of the space, and was created by an admin (system and app fields
are never proposed for removal). Utilisation is associated fields over the 700-field limit.

The two years start at a UTC midnight, so every run of one day over an unchanged space gives the
same report, whichever executor or cache tier computed it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pandas as pd
from sqlalchemy import Connection, text

from precompute_assets.contract import Batch, Extent
from tool_plugins._spaces import SpaceTool, merge_counts_and_latest

FIELD_LIMIT = 700
DAY_S = 86_400
USAGE_WINDOW_S = 730 * DAY_S

# field id -> [values in the usage window, latest value time]
FieldUsage = dict[str, list[int]]


class UnusedFields(SpaceTool[FieldUsage]):
    name = "unused_fields"
    entity_type = "field"
    association_table = "space_fields"
    limit = FIELD_LIMIT
    description = "Fields of a space with no value in two years, on no screen, made by an admin."

    def initialise(self, source: Connection, scope: str) -> Extent:
        extent = super().initialise(source, scope)
        today = extent.params["as_of"] // DAY_S * DAY_S
        return replace(extent, params={**extent.params, "since": today - USAGE_WINDOW_S})

    def scan(self, source: Connection, batch: Batch) -> FieldUsage:
        rows = source.execute(
            text(
                "SELECT v.field_id,"
                " SUM(CASE WHEN v.updated_at >= :since THEN 1 ELSE 0 END), MAX(v.updated_at)"
                # The batch's work items by their key range, then each one's values by key: both
                # SQLite and PostgreSQL plan this as index range scan and nested loop.
                " FROM work_items w JOIN field_values v ON v.work_item_id = w.id"
                " WHERE w.id BETWEEN :first AND :last AND w.space_id = :space_id"
                " AND v.updated_at <= :as_of"
                " GROUP BY v.field_id"
            ),
            {
                "first": batch.first_key,
                "last": batch.last_key,
                "space_id": batch.params["space_id"],
                "since": batch.params["since"],
                "as_of": batch.params["as_of"],
            },
        )
        return {str(field_id): [int(recent), int(latest)] for field_id, recent, latest in rows}

    def merge(self, a: FieldUsage, b: FieldUsage) -> FieldUsage:
        return merge_counts_and_latest(a, b)

    def empty(self) -> FieldUsage:
        return {}

    def finalise(
        self, source: Connection, scope: str, total: FieldUsage, params: Mapping[str, Any]
    ) -> pd.DataFrame:
        fields = source.execute(
            text(
                "SELECT f.id, f.name, f.origin, f.created_at, EXISTS ("
                "  SELECT 1 FROM space_screens ss"
                "  JOIN screen_fields sf ON sf.screen_id = ss.screen_id"
                "  WHERE ss.space_id = a.space_id AND sf.field_id = f.id) AS on_screen"
                " FROM space_fields a JOIN fields f ON f.id = a.field_id"
                " WHERE a.space_id = :space_id ORDER BY f.id"
            ),
            {"space_id": params["space_id"]},
        )
        records = []
        for field_id, name, origin, created_at, on_screen in fields:
            recent, latest = total.get(str(field_id), (0, None))
            records.append(
                {
                    "entity_id": str(field_id),
                    "unused": recent == 0 and not on_screen and origin == "admin",
                    "usage_count": recent,
                    "last_used": latest,
                    "detail": {
                        "name": name,
                        "origin": origin,
                        "on_screen": bool(on_screen),
                        "created_at": created_at,
                    },
                }
            )
        return pd.DataFrame.from_records(
            records, columns=["entity_id", "unused", "usage_count", "last_used", "detail"]
        )

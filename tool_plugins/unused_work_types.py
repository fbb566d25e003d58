"""Work types associated with a space that no work item of the space uses.

Utilisation is associated work types over the 150-work-type limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from sqlalchemy import Connection, text

from precompute_assets.contract import Batch
from tool_plugins._spaces import SpaceTool, merge_counts_and_latest

WORK_TYPE_LIMIT = 150

# work type id -> [work items, latest creation time]
WorkTypeUsage = dict[str, list[int]]


class UnusedWorkTypes(SpaceTool[WorkTypeUsage]):
    name = "unused_work_types"
    entity_type = "work_type"
    association_table = "space_work_types"
    limit = WORK_TYPE_LIMIT
    description = "Work types of a space that no work item of the space uses."

    def scan(self, source: Connection, batch: Batch) -> WorkTypeUsage:
        rows = source.execute(
            text(
                "SELECT work_type_id, COUNT(*), MAX(created_at) FROM work_items"
                " WHERE space_id = :space_id AND id BETWEEN :first AND :last"
                " GROUP BY work_type_id"
            ),
            {
                "space_id": batch.params["space_id"],
                "first": batch.first_key,
                "last": batch.last_key,
            },
        )
        return {str(work_type): [int(count), int(latest)] for work_type, count, latest in rows}

    def merge(self, a: WorkTypeUsage, b: WorkTypeUsage) -> WorkTypeUsage:
        return merge_counts_and_latest(a, b)

    def empty(self) -> WorkTypeUsage:
        return {}

    def finalise(
        self, source: Connection, scope: str, total: WorkTypeUsage, params: Mapping[str, Any]
    ) -> pd.DataFrame:
        work_types = source.execute(
            text(
                "SELECT t.id, t.name FROM space_work_types a JOIN work_types t"
                " ON t.id = a.work_type_id WHERE a.space_id = :space_id ORDER BY t.id"
            ),
            {"space_id": params["space_id"]},
        )
        records = []
        for work_type, name in work_types:
            count, latest = total.get(str(work_type), (0, None))
            records.append(
                {
                    "entity_id": str(work_type),
                    "unused": count == 0,
                    "usage_count": count,
                    "last_used": latest,
                    "detail": {"name": name},
                }
            )
        return pd.DataFrame.from_records(
            records, columns=["entity_id", "unused", "usage_count", "last_used", "detail"]
        )

"""Work types associated with a space that no work item of the space uses.

Utilisation is associated work types over the 150-work-type limit. A work item without a
creation time, or created after the job's reference time, counts as a use and is listed among
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

BATCH_ITEMS = " FROM work_items WHERE space_id = :space_id AND id BETWEEN :first AND :last"
# Every item is a use: the window is all of time, so none is before it.
SCAN = text(
    "SELECT work_type_id, COUNT(*), 0, MAX(created_at), COUNT(created_at)"
    f"{BATCH_ITEMS} GROUP BY work_type_id"
)
LATE = text(
    "SELECT work_type_id, MAX(CASE WHEN created_at <= :as_of THEN created_at END),"
    f" COUNT(CASE WHEN created_at > :as_of THEN 1 END){BATCH_ITEMS}"
    " GROUP BY work_type_id HAVING COUNT(CASE WHEN created_at > :as_of THEN 1 END) > 0"
)
WORK_TYPES = text(
    "SELECT t.id, t.name FROM space_work_types a JOIN work_types t"
    " ON t.id = a.work_type_id WHERE a.space_id = :space_id ORDER BY t.id"
)

# Of the work types :ids of the space, those still associated that no work item of it uses.
STILL_UNUSED = text(
    "SELECT a.work_type_id FROM space_work_types a"
    " WHERE a.space_id = :space_id AND a.work_type_id IN :ids AND NOT EXISTS ("
    "  SELECT 1 FROM work_items w WHERE w.space_id = a.space_id"
    "  AND w.work_type_id = a.work_type_id)"
)


class UnusedWorkTypes(UsageTool):
    name = "unused_work_types"
    entity_type = "work_type"
    description = "Work types of a space that no work item of the space uses."
    catalogue = Spaces(counted="space_work_types", limit=150)
    remediation = RemoveFromSpace(
        "space_work_types", "work_type_id", STILL_UNUSED, action="Remove from the space"
    )

    def scan(self, source: Connection, batch: Batch) -> Usage:
        params = {
            "space_id": batch.params["space_id"],
            "first": batch.first_key,
            "last": batch.last_key,
            "as_of": batch.params["as_of"],
        }
        return scan_usage(source, SCAN, LATE, params)

    def finalise(
        self, source: Connection, scope: str, total: Usage, params: Mapping[str, Any]
    ) -> pd.DataFrame:
        import pandas as pd  # here, not at the top: reading a report need not load pandas

        records = []
        for work_type, name in source.execute(WORK_TYPES, {"space_id": params["space_id"]}):
            count, latest, anomalies = usage_of(total, str(work_type), "items")
            records.append(
                {
                    "entity_id": str(work_type),
                    "unused": count == 0,
                    "usage_count": count,
                    "last_used": latest,
                    "detail": {"name": name, **anomalies},
                }
            )
        return pd.DataFrame.from_records(
            records, columns=["entity_id", "unused", "usage_count", "last_used", "detail"]
        )

"""Whether a stored report is complete: every planned batch folded, one row per entity.

Finalising an empty fold lists every entity a report must cover, without a scan (a law of the
contract), so a report is compared with what the tool says it should hold now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from precompute_assets.contract import ReportTool
from precompute_assets.core.db import connect
from precompute_assets.core.report_store import ReportStore

EXAMPLES = 10


@dataclass(frozen=True)
class Completeness:
    passed: bool
    batches_planned: int
    batches_folded: int | None
    rows: int
    missing: list[str]  # entities the tool covers that the report lacks
    extra: list[str]  # rows of entities the tool does not cover

    def figures(self) -> dict[str, Any]:
        return {
            "batches_planned": self.batches_planned,
            "batches_folded": self.batches_folded,
            "rows": self.rows,
            "entities_missing": len(self.missing),
            "entities_extra": len(self.extra),
        }

    def examples(self) -> dict[str, list[str]]:
        return {"missing": self.missing[:EXAMPLES], "extra": self.extra[:EXAMPLES]}


def check_completeness(
    tool: ReportTool[Any], scope: str, store: ReportStore, source: Engine
) -> Completeness | None:
    """The stored report of ``scope`` against what the tool covers now; None with no report."""
    stored = store.read_records(tool.name, scope)
    if stored is None:
        return None
    header, records = stored
    with connect(source) as connection:
        expected = tool.finalise(connection, scope, tool.empty(), header.summary.get("params", {}))
    expected_ids = set(expected["entity_id"].astype(str))
    stored_ids = {record["entity_id"] for record in records}
    missing, extra = sorted(expected_ids - stored_ids), sorted(stored_ids - expected_ids)
    folded = header.summary.get("batches_folded")
    return Completeness(
        passed=folded == header.batch_count and not missing and not extra,
        batches_planned=header.batch_count,
        batches_folded=folded,
        rows=len(records),
        missing=missing,
        extra=extra,
    )

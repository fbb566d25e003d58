"""One space's report: a sortable, filterable table of its entities, unused first, "computed N
minutes ago" with a banner when the source changed since, its CSV, the space's activity log,
and the form that selects unused entities for review."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from precompute_assets.contract import ReportTool
from precompute_assets.core.report_store import ReportHeader
from precompute_assets.core.window import window_start
from precompute_assets.service.encoding import csv_view
from precompute_assets.service.pages.common import Admin, PageError, Pages, PagesState, render
from precompute_assets.service.reports import Generation

router = APIRouter(prefix="/admin", include_in_schema=False)
Sort = Literal["unused", "name", "origin", "on_screen", "usage_count", "last_used"]
Show = Literal["all", "unused", "used"]
SORT_KEYS = {
    "unused": lambda row: (not row.unused, row.name.lower()),
    "name": lambda row: (row.name.lower(), row.entity_id),
    "origin": lambda row: (row.origin or "", row.name.lower()),
    "on_screen": lambda row: (bool(row.on_screen), row.name.lower()),
    "usage_count": lambda row: (row.usage_count, row.name.lower()),
    "last_used": lambda row: (row.last_used or -1, row.name.lower()),
}


@dataclass(frozen=True)
class EntityRow:
    entity_id: str
    name: str
    origin: str | None
    on_screen: bool | None
    usage_count: int
    last_used: int | None
    unused: bool

    @property
    def last_used_text(self) -> str:
        if self.last_used is None:
            return "never"
        return datetime.fromtimestamp(self.last_used, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class ScopeReport:
    """A stored report as the page shows it."""

    tool: ReportTool[Any]
    scope: str
    tenant: str | None
    header: ReportHeader
    records: list[dict[str, Any]]  # as the store keeps them
    rows: list[EntityRow]
    source_changed: bool
    window_moved: bool


def load_report(pages: PagesState, admin: Admin, tool: str, scope: str) -> ScopeReport:
    """The admin's tenant's report of ``scope``; a 404 page for another tenant's, as for none."""
    found = pages.tool(tool)
    facts = pages.service.store.facts(found.name, scope)
    if facts is None or not admin.key.sees(facts.tenant):
        raise PageError(404, "Not found", f"There is no space {scope!r} of yours.")
    stored = pages.service.store.report(found.name, scope)
    if stored is None:
        raise PageError(
            404, "No report yet", f"{scope} has no {found.name} report yet: refresh it first."
        )
    header, records = stored
    since = header.summary.get("params", {}).get("since")
    current = window_start(found, time.time())
    return ScopeReport(
        found,
        scope,
        facts.tenant,
        header,
        records,
        [_row(record) for record in records],
        facts.source_watermark is not None and facts.source_watermark != header.watermark,
        current is not None and current != since,
    )


@router.get("/tools/{tool}/spaces/{scope}")
def report_page(
    request: Request,
    pages: Pages,
    admin: Admin,
    tool: str,
    scope: str,
    q: str = "",
    show: Show = "all",
    origin: str = "",
    sort: Sort = "unused",
    desc: bool = False,
) -> Response:
    report = load_report(pages, admin, tool, scope)
    needle = q.strip().lower()
    rows = [
        row
        for row in report.rows
        if (not needle or needle in row.name.lower() or needle in row.entity_id.lower())
        and (show == "all" or row.unused == (show == "unused"))
        and (not origin or row.origin == origin)
    ]
    rows.sort(key=SORT_KEYS[sort], reverse=desc)
    activity = pages.actions.recent(admin.key.tenant, tool=report.tool.name, scope=scope, limit=20)
    has_origin = any(row.origin is not None for row in report.rows)
    has_screen = any(row.on_screen is not None for row in report.rows)
    filters = {"q": q, "show": show, "origin": origin}
    return render(
        request,
        "report.html",
        admin,
        report=report,
        rows=rows,
        origins=sorted({row.origin for row in report.rows if row.origin}),
        has_origin=has_origin,
        has_screen=has_screen,
        filters=filters,
        columns=_columns(filters, sort, desc, has_origin, has_screen),
        sort=sort,
        desc=desc,
        activity=activity,
        remediation=report.tool.remediation,
    )


@router.get("/tools/{tool}/spaces/{scope}/report.csv")
def report_csv(pages: Pages, admin: Admin, tool: str, scope: str) -> Response:
    """Every row of the report as CSV (the API's CSV)."""
    report = load_report(pages, admin, tool, scope)
    generation = Generation.from_records(report.header, report.records, tenant=None)
    public = [{k: v for k, v in row.items() if not k.startswith("_")} for row in generation.rows]
    name = f"{report.tool.name}-{scope}-g{report.header.generation}"
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return Response(
        csv_view(public).body(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}.csv"',
            "Cache-Control": "no-store",
        },
    )


def _columns(
    filters: dict[str, str], sort: str, desc: bool, has_origin: bool, has_screen: bool
) -> list[dict[str, str | None]]:
    """The table's headers: each a link sorting by it (again: the other way), and its
    ``aria-sort`` when the table is sorted by it."""
    wanted = [
        ("name", "Name"),
        *([("origin", "Origin")] if has_origin else []),
        *([("on_screen", "On a screen")] if has_screen else []),
        ("usage_count", "Uses"),
        ("last_used", "Last used"),
        ("unused", "Unused"),
    ]
    columns = []
    for key, label in wanted:
        current = key == sort
        descending = not desc if current else key in ("usage_count", "last_used")
        query = urlencode({**filters, "sort": key, "desc": "true" if descending else "false"})
        columns.append(
            {
                "label": label,
                "href": f"?{query}",
                "aria_sort": ("descending" if desc else "ascending") if current else None,
            }
        )
    return columns


def _row(record: dict[str, Any]) -> EntityRow:
    detail = record["detail"]
    return EntityRow(
        record["entity_id"],
        str(detail.get("name") or record["entity_id"]),
        detail.get("origin"),
        detail.get("on_screen"),
        record["usage_count"],
        record["last_used"],
        record["unused"],
    )

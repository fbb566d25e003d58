"""What the API answers, as pydantic models: they are its OpenAPI schema.

The report route sends bytes it encoded once per generation (``encoding.py``); the models
describe them, and the tests check every answer against this schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Tool(BaseModel):
    name: str
    entity_type: str = Field(description="what the report's rows are (field, work_type, ...)")
    description: str
    limit: int | None = Field(description="what utilisation is measured against, if anything")


class ToolList(BaseModel):
    tools: list[Tool]


class ScopeItem(BaseModel):
    scope: str
    tenant: str | None
    utilisation: float | None = Field(description="how close the scope is to its limit, 0 to 1+")
    high: bool = Field(description="at or above the refresh threshold: refreshed first")
    generation: int | None = Field(description="the stored report's generation; null: none yet")
    computed_at: str | None = Field(description="when the stored report was computed (UTC)")
    age_s: float | None
    source_changed: bool = Field(description="the source changed since the report's job read it")
    window_moved: bool = Field(description="a report computed now would start its window later")
    due: Literal["missing", "changed", "aged"] | None = Field(
        description="why the refresh policy would recompute it now, if it would"
    )
    report: str = Field(description="the report's URL")


class ScopePage(BaseModel):
    tool: str
    scopes: list[ScopeItem] = Field(description="in refresh-priority order")
    next: str | None = Field(description="the next page's URL; null on the last page")


class ReportRow(BaseModel):
    entity_type: str
    entity_id: str
    unused: bool
    usage_count: int
    last_used: str | None = Field(description="UTC time of the last use; null: never")
    detail: dict[str, Any]


class ReportHeaderModel(BaseModel):
    generation: int
    status: str
    computed_at: str
    watermark: str = Field(description="the source's change version the report was computed at")
    entity_count: int
    row_count: int
    unused_count: int
    batch_count: int
    shard_count: int
    duration_s: float
    utilisation: float | None
    run_id: str | None
    summary: dict[str, Any]


class StalenessModel(BaseModel):
    computed_at: str
    age_s: float
    source_changed: bool = Field(
        description="the source's watermark, as last seen by the sensors, differs from the report's"
    )
    source_watermark: str | None = Field(description="the source's watermark as last seen")
    window_since: int | None = Field(description="start of the report's time window, unix seconds")
    window_moved: bool


class ReportPage(BaseModel):
    tool: str
    scope: str
    tenant: str | None
    generation: int
    header: ReportHeaderModel
    rows: list[ReportRow]
    next: str | None = Field(
        description="the next page's URL (it pins this generation); null on the last page"
    )
    staleness: StalenessModel


class RefreshAccepted(BaseModel):
    run_id: str
    status: str = Field(description="Dagster's run status: QUEUED, STARTED, ...")
    coalesced: bool = Field(description="true: this request joined a run already queued or running")
    status_url: str


class RefreshStatus(BaseModel):
    run_id: str
    status: str
    tool: str
    scope: str
    finished: bool
    report: str = Field(description="the report's URL")


class Health(BaseModel):
    status: Literal["ok"]

"""Reading a stored report, with how stale it is, without recomputing anything."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Self

import pandas as pd
from sqlalchemy import Engine

from precompute_assets.contract import ReportTool
from precompute_assets.db import check_reachable, connect, create_engine_for
from precompute_assets.registry import get_tool
from precompute_assets.report_store import ReportHeader, ReportStore
from precompute_assets.settings import Settings
from precompute_assets.text import human_age


class NoReportError(LookupError):
    """The scope exists but no report has been computed for it yet."""


class UnknownScopeError(LookupError):
    """The source holds no such scope."""


@dataclass(frozen=True)
class Staleness:
    """How far a stored report may be behind its source."""

    computed_at: datetime
    age_s: float
    source_watermark: str | None  # the source's watermark now; None if the scope is gone
    source_changed: bool

    def describe(self) -> str:
        age = human_age(self.age_s)
        changed = "source changed since" if self.source_changed else "source unchanged"
        return f"computed {self.computed_at:%Y-%m-%d %H:%M:%S} UTC ({age} ago), {changed}"


@dataclass(frozen=True)
class Report:
    header: ReportHeader
    rows: pd.DataFrame
    staleness: Staleness

    def to_json(self) -> dict[str, Any]:
        rows = self.rows.assign(
            last_used=self.rows["last_used"].map(lambda t: None if pd.isna(t) else t.isoformat())
        )
        return {
            "tool": self.header.tool,
            "scope": self.header.scope,
            "header": asdict(self.header),
            "staleness": {
                "computed_at": self.staleness.computed_at.isoformat(),
                "age_s": round(self.staleness.age_s, 3),
                "source_watermark": self.staleness.source_watermark,
                "source_changed": self.staleness.source_changed,
            },
            "rows": rows.to_dict(orient="records"),
        }


class ReportReader:
    """Reads reports from the store and asks the source only for its watermark.

    Example::

        reader = ReportReader.from_settings(Settings.from_env(), load_tools())
        report = reader.read("unused_fields", "t1-s001", unused_only=True)
    """

    def __init__(
        self, tools: Mapping[str, ReportTool[Any]], store: ReportStore, source: Engine
    ) -> None:
        self.tools = tools
        self.store = store
        self.source = source

    @classmethod
    def from_settings(cls, settings: Settings, tools: Mapping[str, ReportTool[Any]]) -> Self:
        return cls(
            tools,
            ReportStore(check_reachable(create_engine_for(settings.store_url))),
            check_reachable(create_engine_for(settings.source_url, must_exist=True)),
        )

    def read(self, tool_name: str, scope: str, *, unused_only: bool = False) -> Report:
        tool = get_tool(self.tools, tool_name)
        stored = self.store.read(tool.name, scope, unused_only=unused_only)
        current = self.current_watermark(tool, scope)
        if stored is None:
            if current is None:
                raise UnknownScopeError(f"unknown scope {scope!r}: the source has no such scope")
            raise NoReportError(
                f"no {tool.name} report for scope {scope!r} yet; compute it by materialising "
                f"partition {scope!r} of asset {tool.name}_report in the Dagster UI "
                f"(make ui), or run `precompute demo`"
            )
        header, rows = stored
        computed_at = datetime.fromtimestamp(header.computed_at, UTC)
        staleness = Staleness(
            computed_at=computed_at,
            age_s=max(0.0, time.time() - header.computed_at),
            source_watermark=current,
            source_changed=current != header.watermark,
        )
        return Report(header, rows, staleness)

    def current_watermark(self, tool: ReportTool[Any], scope: str) -> str | None:
        with connect(self.source) as source:
            return tool.watermark(source, [scope]).get(scope)

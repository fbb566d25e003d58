"""Reading a stored report, with how stale it is, without recomputing anything."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import Engine

from precompute_assets.contract import REPORT_COLUMNS, ReportTool
from precompute_assets.core.db import check_reachable, connect, create_engine_for
from precompute_assets.core.errors import NoReportError, UnknownScopeError
from precompute_assets.core.registry import get_tool
from precompute_assets.core.report_store import ReportHeader, ReportStore, rows_frame
from precompute_assets.core.settings import Settings
from precompute_assets.core.text import human_age, shorten
from precompute_assets.core.window import window_start

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Staleness:
    """How far a stored report may be behind its source and its time window."""

    computed_at: datetime
    age_s: float
    source_watermark: str | None  # the source's watermark now; None if the scope is gone
    source_changed: bool
    window_since: int | None  # the start of the report's time window (unix seconds), if any
    window_moved: bool  # a report computed now would start its window later

    def describe(self) -> str:
        age = human_age(self.age_s)
        changed = "source changed since" if self.source_changed else "source unchanged"
        moved = ", time window moved since" if self.window_moved else ""
        return f"computed {self.computed_at:%Y-%m-%d %H:%M:%S} UTC ({age} ago), {changed}{moved}"


@dataclass(frozen=True)
class Report:
    """A stored report: its header, its rows as plain values, and how stale it is.

    ``records`` are dicts of ``REPORT_COLUMNS`` (``last_used`` in unix seconds or None);
    ``rows`` gives them as the report's DataFrame.
    """

    header: ReportHeader
    records: list[dict[str, Any]]
    staleness: Staleness

    @property
    def rows(self) -> pd.DataFrame:
        return rows_frame(
            [tuple(record[name] for name in REPORT_COLUMNS) for record in self.records]
        )

    def to_json(self) -> dict[str, Any]:
        """The report as strict JSON values: a missing time is null, never NaN."""
        rows = [{**record, "last_used": _iso(record["last_used"])} for record in self.records]
        return {
            "tool": self.header.tool,
            "scope": self.header.scope,
            "header": asdict(self.header),
            "staleness": {
                "computed_at": self.staleness.computed_at.isoformat(),
                "age_s": round(self.staleness.age_s, 3),
                "source_watermark": self.staleness.source_watermark,
                "source_changed": self.staleness.source_changed,
                "window_since": self.staleness.window_since,
                "window_moved": self.staleness.window_moved,
            },
            "rows": rows,
        }


def _iso(seconds: int | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


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
        """A reader on read-only connections: it never writes, nor waits on a writer."""
        return cls(
            tools,
            ReportStore(check_reachable(create_engine_for(settings.store_url, read_only=True))),
            check_reachable(create_engine_for(settings.source_url, read_only=True)),
        )

    def read(self, tool_name: str, scope: str, *, unused_only: bool = False) -> Report:
        tool = get_tool(self.tools, tool_name)
        stored = self.store.read_records(tool.name, scope, unused_only=unused_only)
        current = self.current_watermark(tool, scope)
        if stored is None:
            if current is None:
                raise UnknownScopeError(
                    f"unknown scope {shorten(scope)!r}: the source has no such scope"
                )
            raise NoReportError(
                f"no {tool.name} report for scope {scope!r} yet; compute it with "
                f"`precompute refresh {tool.name} {scope}`, or materialise partition {scope!r} "
                f"of asset {tool.name}_report in the Dagster UI"
            )
        header, rows = stored
        return Report(header, rows, staleness(tool, header, current, time.time()))

    def current_watermark(self, tool: ReportTool[Any], scope: str) -> str | None:
        with connect(self.source) as source:
            return tool.catalogue.watermark(source, [scope]).get(scope)


def staleness(
    tool: ReportTool[Any], header: ReportHeader, watermark: str | None, now: float
) -> Staleness:
    """A report's staleness, from the source's watermark now."""
    since = header.summary.get("params", {}).get("since")
    current_since = window_start(tool, now)
    return Staleness(
        computed_at=datetime.fromtimestamp(header.computed_at, UTC),
        age_s=max(0.0, now - header.computed_at),
        source_watermark=watermark,
        source_changed=watermark != header.watermark,
        window_since=since,
        window_moved=current_since is not None and current_since != since,
    )

"""Fleet status: every scope of a tool with its utilisation and staleness, by refresh priority."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from precompute_assets.contract import ReportTool
from precompute_assets.core.db import check_reachable, create_engine_for, missing_sqlite_file
from precompute_assets.core.refresh import (
    due_reason,
    is_high,
    is_stale,
    priority_order,
    scope_states,
)
from precompute_assets.core.report_store import ReportStore
from precompute_assets.core.settings import RefreshSettings, Settings
from precompute_assets.core.text import format_table, human_age


@dataclass(frozen=True)
class ScopeStatus:
    scope: str
    utilisation: float
    high: bool
    report_age_s: float | None  # None: no report
    source_changed: bool
    stale: bool
    due: str | None  # why the refresh policy would recompute it now

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "utilisation": round(self.utilisation, 4),
            "high": self.high,
            "report_age_s": None if self.report_age_s is None else round(self.report_age_s, 1),
            "source_changed": self.source_changed,
            "stale": self.stale,
            "due": self.due,
        }


def fleet_status(
    tool: ReportTool[Any],
    settings: Settings,
    refresh: RefreshSettings,
    scopes: list[str] | None = None,
) -> list[ScopeStatus]:
    """One row per scope in the source (or per one of ``scopes``, each read by key), in the
    order the refresh sensor would take them.

    Reads only; a store no run has created yet holds no report.
    """
    source = check_reachable(create_engine_for(settings.source_url, read_only=True))
    store = None
    if not missing_sqlite_file(settings.store_url):
        store = ReportStore(check_reachable(create_engine_for(settings.store_url, read_only=True)))
    states = scope_states(tool, source, store, scopes)
    now = time.time()
    return [
        ScopeStatus(
            scope=state.scope,
            utilisation=state.utilisation,
            high=is_high(state, refresh),
            report_age_s=None if math.isinf(age := state.age_s(now)) else age,
            source_changed=state.source_changed,
            stale=is_stale(state, refresh, now),
            due=None if (reason := due_reason(state, refresh, now)) is None else reason.value,
        )
        for state in priority_order(states, refresh)
    ]


def format_status(rows: list[ScopeStatus]) -> str:
    titles = ["scope", "utilisation", "report age", "source changed", "stale", "due"]
    table = [
        [
            row.scope,
            f"{row.utilisation:.0%}" + (" *" if row.high else ""),
            "no report" if row.report_age_s is None else human_age(row.report_age_s),
            "yes" if row.source_changed else "no",
            "STALE" if row.stale else "fresh",
            row.due or "-",
        ]
        for row in rows
    ]
    note = "* at or above the refresh threshold: refreshed first"
    return f"{format_table(titles, table)}\n{note}"

"""Asynchronous pre-computed reports on Dagster.

This package root exposes what a tool author uses, and nothing that imports Dagster: the tool
contract (with its optional remediation) and the ready-made accumulators. The Dagster
definitions live in ``precompute_assets.orchestration.definitions``; the demo source's space
catalogue is ``precompute_assets.demo.Spaces``.
"""

from precompute_assets.accumulators import Usage, UsageTool, count_uses, scan_usage, usage_of
from precompute_assets.contract import (
    REPORT_COLUMNS,
    Batch,
    Changes,
    Extent,
    MalformedReportError,
    Remediation,
    ReportTool,
    ScopeCatalogue,
    ScopeChange,
    ScopeNotFoundError,
)

__all__ = [
    "REPORT_COLUMNS",
    "Batch",
    "Changes",
    "Extent",
    "MalformedReportError",
    "Remediation",
    "ReportTool",
    "ScopeCatalogue",
    "ScopeChange",
    "ScopeNotFoundError",
    "Usage",
    "UsageTool",
    "count_uses",
    "scan_usage",
    "usage_of",
]

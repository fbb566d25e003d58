"""Asynchronous pre-computed reports on Dagster.

This package root exposes only the tool contract, so a tool can import it without Dagster.
The Dagster definitions live in ``precompute_assets.orchestration.definitions``.
"""

from precompute_assets.contract import (
    REPORT_COLUMNS,
    Batch,
    Extent,
    MalformedReportError,
    ReportTool,
    ScopeNotFoundError,
)

__all__ = [
    "REPORT_COLUMNS",
    "Batch",
    "Extent",
    "MalformedReportError",
    "ReportTool",
    "ScopeNotFoundError",
]

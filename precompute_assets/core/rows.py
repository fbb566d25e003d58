"""The report's rows in the shape the store keeps: what ``finalise`` returned, checked."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from precompute_assets.contract import REPORT_COLUMNS, MalformedReportError, ReportTool


def validate_report(tool: ReportTool[Any], scope: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows in the stored shape, or MalformedReportError naming the tool, scope and fault."""

    def fail(problem: str) -> MalformedReportError:
        return MalformedReportError(
            f"tool {tool.name!r}, scope {scope!r}: malformed report: {problem}"
        )

    if not isinstance(rows, pd.DataFrame):
        raise fail(f"finalise returned {type(rows).__name__}, not a pandas DataFrame")
    rows = rows.copy()
    if "entity_type" not in rows.columns:
        rows["entity_type"] = tool.entity_type
    missing = [column for column in REPORT_COLUMNS if column not in rows.columns]
    if missing:
        raise fail(f"missing columns {missing}")
    if rows["entity_id"].isna().any():
        raise fail("entity_id has missing values")
    rows["entity_id"] = rows["entity_id"].astype(str)
    duplicated = rows.loc[rows["entity_id"].duplicated(), "entity_id"].tolist()
    if duplicated:
        raise fail(f"entity_id not unique: {duplicated[:5]}")
    if (
        not rows["unused"]
        .map(lambda value: isinstance(value, bool | int) and value in (0, 1))
        .all()
    ):
        raise fail("unused must be a boolean")
    rows["unused"] = rows["unused"].astype(bool)
    counts = pd.to_numeric(rows["usage_count"], errors="coerce")
    if counts.isna().any() or (counts < 0).any() or not (counts == counts.round()).all():
        raise fail("usage_count must be a non-negative integer")
    rows["usage_count"] = counts.astype("int64")
    # Whole seconds, as the report store keeps them, so a report reads back as it was written.
    rows["last_used"] = _as_utc(rows["last_used"], fail).dt.floor("s").astype("datetime64[s, UTC]")
    if not rows["detail"].map(_is_json_object).all():
        raise fail("detail must be a JSON-serialisable dict or missing")
    return rows.loc[:, list(REPORT_COLUMNS)].reset_index(drop=True)


def _as_utc(values: pd.Series, fail: Callable[[str], Exception]) -> pd.Series:
    """Timestamps as UTC; numbers (with gaps) are unix seconds."""
    try:
        if pd.api.types.is_datetime64_any_dtype(values):
            return pd.to_datetime(values, utc=True)
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().sum() == values.notna().sum():
            return pd.to_datetime(numbers, unit="s", utc=True)
        return pd.to_datetime(values, utc=True)
    except (ValueError, TypeError, OverflowError) as error:
        raise fail(f"last_used is not a time: {error}") from error


def _is_json_object(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    if not isinstance(value, dict):
        return False
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True

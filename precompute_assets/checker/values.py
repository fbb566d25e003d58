"""Comparing accumulators and reports, and saying how they differ, in words.

Accumulators compare as the ledger stores them (JSON, keys sorted); reports compare cell by cell
after ``validate_report``. A difference names the first place two differ, the one found first
and then what the reference has: ``entity 17 usage_count 5, expected 4``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from precompute_assets.contract import REPORT_COLUMNS, MalformedReportError
from precompute_assets.core.ledger import decode, encode

ReportOrError = pd.DataFrame | MalformedReportError
MISSING = object()


def _normal_form(value: Any) -> str | None:
    """The ledger's encoding (keys sorted), or None for a value the ledger cannot store."""
    try:
        return encode(value)
    except (TypeError, ValueError):
        return None


def _same(one: Any, other: Any) -> bool:
    """Equal as the ledger would store them; plain equality for values it cannot store."""
    one_form, other_form = _normal_form(one), _normal_form(other)
    if one_form is None or other_form is None:
        return bool(one == other)
    return one_form == other_form


def _round_trips(value: Any) -> bool:
    try:
        return bool(decode(encode(value)) == value)
    except (TypeError, ValueError):
        return False


def _every_other(raw: Sequence[Any], decoded: Sequence[Any]) -> list[Any]:
    """Raw and decoded contributions alternating, as when finalise rescans some lost batches."""
    return [d if i % 2 else r for i, (r, d) in enumerate(zip(raw, decoded, strict=True))]


def _json_copy(value: Any) -> Any:
    return decode(encode(value))


def _json_problem(value: Any, where: str = "the contribution") -> str:
    """The first part of ``value`` that JSON does not keep as it is, in words."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has key {key!r} ({type(key).__name__}), " + _json_key(key)
            problem = _json_problem(item, f"{where}[{key!r}]")
            if problem:
                return problem
        return ""
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{where}[{index}]")
            if problem:
                return problem
        return ""
    if isinstance(value, tuple):
        return f"{where} is the tuple {_show(value)}, which JSON turns into a list"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where} is {value!r}, which is not a JSON number"
    if value is None or isinstance(value, str | bool | int | float):
        return ""
    return f"{where} is a {type(value).__name__} ({_show(value)}), not a JSON value"


def _json_key(key: Any) -> str:
    try:
        return f"which JSON turns into {next(iter(decode(encode({key: None}))))!r}"
    except (TypeError, ValueError):
        return "which JSON cannot encode"


def _value_difference(baseline: Any, subject: Any, where: str = "") -> str:
    """The first difference: what was found, then what the reference has.

    E.g. ``key '17': [5, 1, 0, 0], expected [4, 1, 0, 0]``; dicts are searched key by key.
    """
    if isinstance(baseline, dict) and isinstance(subject, dict):
        for key in sorted(baseline.keys() | subject.keys(), key=repr):
            one, other = baseline.get(key, MISSING), subject.get(key, MISSING)
            if one is MISSING or other is MISSING or not _same(one, other):
                path = f"{where} -> {key!r}" if where else f"key {key!r}"
                return _value_difference(one, other, path)
    return f"{where or 'value'}: {_show(subject)}, expected {_show(baseline)}"


def _report_difference(baseline: ReportOrError, subject: ReportOrError) -> str | None:
    """The first difference between two reports: ``entity 17 usage_count 5, expected 4``.

    None when they agree.
    """
    if isinstance(baseline, MalformedReportError) or isinstance(subject, MalformedReportError):
        if str(baseline) == str(subject):
            return None
        failed = subject if isinstance(subject, MalformedReportError) else baseline
        return f"finalise fails: {failed}"
    expected = {row["entity_id"]: row for row in baseline.to_dict("records")}
    actual = {row["entity_id"]: row for row in subject.to_dict("records")}
    for entity in sorted(expected.keys() | actual.keys()):
        if entity not in actual:
            return f"entity {entity} is missing"
        if entity not in expected:
            return f"entity {entity} is extra"
        for column in REPORT_COLUMNS:
            was, now = expected[entity][column], actual[entity][column]
            if not _same_cell(was, now):
                return f"entity {entity} {column} {_show(now)}, expected {_show(was)}"
    return None


def _same_cell(one: Any, other: Any) -> bool:
    if not (pd.api.types.is_scalar(one) and pd.api.types.is_scalar(other)):
        return bool(one == other)
    if pd.isna(one) or pd.isna(other):
        return bool(pd.isna(one) and pd.isna(other))
    return bool(one == other)


def _show(value: Any) -> str:
    if value is MISSING or value is None or value is pd.NaT:
        return "missing"
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    text = str(value) if isinstance(value, numbers.Number | np.generic) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
